package memapi

import (
	"strconv"
	"strings"
)

// tslAccepts reports whether the real server's search parser takes q:
// github.com/yaacov/tree-search-language's ParseTSL (the version pinned by
// ambient-api-server's go.mod, v0.0.0-20190923184055-1c2dad2e354b), whose
// grammar is its TSL.g4 and whose listener (pkg/tsl/listener.go) refuses
// a few parsed trees as well. A query it refuses is the real list's 400 id
// 21 (errSearchSyntax); one it takes and memapi cannot evaluate is
// memapi's own answer (errSearchUnsupported). This is a recognizer only,
// written from the grammar: it builds nothing.
//
// The language, precedence aside (it changes the tree, not what parses):
//
//	expr      := NOT expr | expr (AND | OR) expr | "(" expr ")" | math tail
//	tail      := cmp literal | ("~=" | "~!") string | [NOT] (LIKE | ILIKE) string
//	           | IS [NOT] (NULL | literal) | [NOT] BETWEEN literal AND literal
//	           | [NOT] IN "(" [literal {"," literal}] ")"
//	math      := column | "(" math ")" | math ("*" | "/" | "%" | "+" | "-") (number | math)
//	column    := [[ident "."] ident "."] ident
//	literal   := ["+" | "-"] number | string
//
// The listener's refusals: a string after a math operator, and a number
// that strconv.ParseFloat refuses (out of range, e.g. 1e999).
func tslAccepts(q string) bool {
	toks, ok := tslLex(q)
	if !ok {
		return false
	}
	p := &tslParser{toks: toks}
	return p.expr() && p.peek().kind == tslEOF
}

type tslKind int

const (
	tslEOF tslKind = iota
	tslIdent
	tslNumber
	tslString
	tslKeyword // text upper-cased: AND, OR, NOT, LIKE, ILIKE, BETWEEN, IN, IS, NULL
	tslPunct   // < <= > >= = != <> ~= ~! ( ) , . * / % + -
)

type tslToken struct {
	kind tslKind
	text string
}

var tslKeywords = map[string]bool{
	"AND": true, "OR": true, "NOT": true, "LIKE": true, "ILIKE": true,
	"BETWEEN": true, "IN": true, "IS": true, "NULL": true,
}

// tslLex splits q into TSL.g4's tokens; false for a character no token
// starts with (ANTLR's token recognition error, which fails the parse).
func tslLex(q string) ([]tslToken, bool) {
	var toks []tslToken
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v':
			i++
		case c == '\'':
			j, ok := tslQuoted(q, i, '\'')
			if !ok {
				return nil, false
			}
			toks = append(toks, tslToken{tslString, q[i:j]})
			i = j
		case c == '"' || c == '`':
			j, ok := tslQuoted(q, i, c)
			if !ok {
				return nil, false
			}
			toks = append(toks, tslToken{tslIdent, q[i:j]})
			i = j
		case c == '[':
			j := strings.IndexByte(q[i:], ']')
			if j < 0 {
				return nil, false
			}
			toks = append(toks, tslToken{tslIdent, q[i : i+j+1]})
			i += j + 1
		case isDigit(c) || (c == '.' && i+1 < len(q) && isDigit(q[i+1])):
			j := tslNumberEnd(q, i)
			toks = append(toks, tslToken{tslNumber, q[i:j]})
			i = j
		case c == '_' || isLetter(c):
			j := i + 1
			for j < len(q) && (q[j] == '_' || isLetter(q[j]) || isDigit(q[j])) {
				j++
			}
			word := q[i:j]
			if up := strings.ToUpper(word); tslKeywords[up] {
				toks = append(toks, tslToken{tslKeyword, up})
			} else {
				toks = append(toks, tslToken{tslIdent, word})
			}
			i = j
		default:
			n := tslPunctLen(q[i:])
			if n == 0 {
				return nil, false
			}
			toks = append(toks, tslToken{tslPunct, q[i : i+n]})
			i += n
		}
	}
	return append(toks, tslToken{kind: tslEOF}), true
}

// tslQuoted returns the end of the quoted token at q[i] (quote doubled
// inside it), false when it does not end.
func tslQuoted(q string, i int, quote byte) (int, bool) {
	for j := i + 1; j < len(q); j++ {
		if q[j] != quote {
			continue
		}
		if j+1 < len(q) && q[j+1] == quote {
			j++
			continue
		}
		return j + 1, true
	}
	return 0, false
}

// tslNumberEnd returns the end of NUMERIC_LITERAL at q[i]: DIGIT+ ('.'
// DIGIT*)? or '.' DIGIT+, then an exponent only if digits follow it (the
// lexer takes the longest match, so "1e" is the number 1 and the
// identifier e).
func tslNumberEnd(q string, i int) int {
	digits := func(j int) int {
		for j < len(q) && isDigit(q[j]) {
			j++
		}
		return j
	}
	j := digits(i)
	if j < len(q) && q[j] == '.' {
		j = digits(j + 1)
	}
	if j < len(q) && (q[j] == 'e' || q[j] == 'E') {
		k := j + 1
		if k < len(q) && (q[k] == '+' || q[k] == '-') {
			k++
		}
		if e := digits(k); e > k {
			j = e
		}
	}
	return j
}

// tslPunctLen returns the length of the operator at the start of s, 0 for
// none.
func tslPunctLen(s string) int {
	for _, op := range []string{"<=", ">=", "!=", "<>", "~=", "~!"} {
		if strings.HasPrefix(s, op) {
			return 2
		}
	}
	if strings.IndexByte("<>=(),.*/%+-", s[0]) >= 0 {
		return 1
	}
	return 0
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// tslMaxDepth bounds the recursion on nested parentheses and NOTs: a
// query deeper than this is refused as if it did not parse (the real
// parser has no such limit; no useful search comes near it).
const tslMaxDepth = 256

type tslParser struct {
	toks  []tslToken
	i     int
	depth int
}

func (p *tslParser) peek() tslToken { return p.toks[p.i] }

func (p *tslParser) next() tslToken {
	t := p.toks[p.i]
	if t.kind != tslEOF {
		p.i++
	}
	return t
}

func (p *tslParser) punct(s string) bool {
	if t := p.peek(); t.kind == tslPunct && t.text == s {
		p.i++
		return true
	}
	return false
}

func (p *tslParser) keyword(s string) bool {
	if t := p.peek(); t.kind == tslKeyword && t.text == s {
		p.i++
		return true
	}
	return false
}

func (p *tslParser) deeper() bool {
	p.depth++
	return p.depth <= tslMaxDepth
}

// expr parses operands joined by AND or OR.
func (p *tslParser) expr() bool {
	if !p.operand() {
		return false
	}
	for p.keyword("AND") || p.keyword("OR") {
		if !p.operand() {
			return false
		}
	}
	return true
}

// operand parses NOT operand, or a term that must be a condition.
func (p *tslParser) operand() bool {
	if !p.deeper() {
		return false
	}
	defer func() { p.depth-- }()
	if p.keyword("NOT") {
		return p.operand()
	}
	cond, ok := p.term()
	return ok && cond
}

// term parses a condition or a bare math expression (which only a
// parenthesis around it, or a tail after it, can complete): cond reports
// which. "(" opens either, so the inside decides.
func (p *tslParser) term() (cond, ok bool) {
	if !p.deeper() {
		return false, false
	}
	defer func() { p.depth-- }()
	if p.punct("(") {
		if p.peek().kind == tslKeyword && p.peek().text == "NOT" {
			ok := p.expr() && p.punct(")")
			return ok, ok
		}
		inner, ok := p.term()
		if !ok {
			return false, false
		}
		if inner {
			for p.keyword("AND") || p.keyword("OR") {
				if !p.operand() {
					return false, false
				}
			}
			return true, p.punct(")")
		}
		if !p.punct(")") {
			return false, false
		}
	} else if !p.column() {
		return false, false
	}
	// A math expression so far: its operators, then maybe a tail.
	if !p.mathOps() {
		return false, false
	}
	if !p.startsTail() {
		return false, true
	}
	return true, p.tail()
}

// mathOps parses {op (number | math operand)} after a math operand.
func (p *tslParser) mathOps() bool {
	for {
		t := p.peek()
		if t.kind != tslPunct || strings.IndexByte("*/%+-", t.text[0]) < 0 || len(t.text) != 1 {
			return true
		}
		p.next()
		switch n := p.peek(); {
		case n.kind == tslString:
			return false // the listener refuses a string in math
		case n.kind == tslNumber || (n.kind == tslPunct && (n.text == "+" || n.text == "-")):
			if !p.number() {
				return false
			}
		case n.kind == tslPunct && n.text == "(":
			if !p.deeper() {
				return false
			}
			p.next()
			ok := p.mathOperand() && p.mathOps() && p.punct(")")
			p.depth--
			if !ok {
				return false
			}
		default:
			if !p.column() {
				return false
			}
		}
	}
}

// mathOperand parses a column or a parenthesized math expression.
func (p *tslParser) mathOperand() bool {
	if p.punct("(") {
		if !p.deeper() {
			return false
		}
		ok := p.mathOperand() && p.mathOps() && p.punct(")")
		p.depth--
		return ok
	}
	return p.column()
}

// column parses [[ident "."] ident "."] ident.
func (p *tslParser) column() bool {
	for part := 0; part < 3; part++ {
		if p.next().kind != tslIdent {
			return false
		}
		if part < 2 && !p.punct(".") {
			return true
		}
	}
	return true
}

// startsTail reports whether the next token begins a condition's tail.
func (p *tslParser) startsTail() bool {
	t := p.peek()
	switch t.kind {
	case tslPunct:
		switch t.text {
		case "<", "<=", ">", ">=", "=", "!=", "<>", "~=", "~!":
			return true
		}
	case tslKeyword:
		switch t.text {
		case "NOT", "LIKE", "ILIKE", "IS", "BETWEEN", "IN":
			return true
		}
	}
	return false
}

// tail parses what follows a math expression in a condition.
func (p *tslParser) tail() bool {
	t := p.next()
	if t.kind == tslPunct {
		if t.text == "~=" || t.text == "~!" {
			return p.next().kind == tslString // the listener wants a string
		}
		return p.literal()
	}
	switch t.text {
	case "IS":
		p.keyword("NOT")
		return p.keyword("NULL") || p.literal()
	case "NOT":
		t = p.next()
		if t.kind != tslKeyword {
			return false
		}
	}
	switch t.text {
	case "LIKE", "ILIKE":
		return p.next().kind == tslString // the listener wants a string
	case "BETWEEN":
		return p.literal() && p.keyword("AND") && p.literal()
	case "IN":
		if !p.punct("(") {
			return false
		}
		if p.punct(")") {
			return true
		}
		for {
			if !p.literal() {
				return false
			}
			if !p.punct(",") {
				return p.punct(")")
			}
		}
	}
	return false
}

// literal parses ["+" | "-"] number | string.
func (p *tslParser) literal() bool {
	if p.peek().kind == tslString {
		p.next()
		return true
	}
	return p.number()
}

// number parses ["+" | "-"] number, which strconv.ParseFloat must take
// (the listener's check).
func (p *tslParser) number() bool {
	sign := ""
	if p.punct("+") {
		sign = "+"
	} else if p.punct("-") {
		sign = "-"
	}
	t := p.next()
	if t.kind != tslNumber {
		return false
	}
	_, err := strconv.ParseFloat(sign+t.text, 64)
	return err == nil
}
