package memapi

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// The REST lists' search parameter (search=name='p1') is a small subset of
// the real server's TSL query language (tree-search-language, turned into
// SQL there):
//
//	query  := or
//	or     := and { "or" and }
//	and    := term { "and" term }
//	term   := "(" query ")" | field op
//	op     := ("=" | "!=" | "<>") value
//	        | ("like" | "ilike") 'pattern'      (% any run, _ one character, \ escapes)
//	        | "in" "(" value { "," value } ")"
//	value  := 'string' ('' is a quote) | number
//
// Keywords are case-insensitive. field is "id" or a scalar field of the
// object by its proto name (name, project_id, phase, llm_max_tokens, ...).
// Like SQL, a comparison with an unset optional field is false, "!="
// included. A search the real parser refuses is its 400 id 21 (see
// listSearch). Not supported, though the real parser takes them (memapi's
// 400 id 23): not, <, <=, >, >=, ~=, ~!, between, is [not] null,
// arithmetic, qualified or quoted field names, timestamps (created_at,
// start_time, ...) and JSON paths into the JSON-in-string fields. The
// real server's other list parameters, orderBy and fields, are in
// orderby.go and rest.go's mount.
const (
	maxSearchLen   = 4096
	maxSearchDepth = 32
)

// predicate tells whether an object matches a search.
type predicate func(protoreflect.Message) bool

// searchValue is a field's value or a literal: text for text fields, num
// for numeric ones (the other stays zero), so values compare with ==.
type searchValue struct {
	text string
	num  float64
}

// getter reads a field's value; false means unset (SQL NULL).
type getter func(protoreflect.Message) (searchValue, bool)

// listSearch is a REST list's search (trimmed of spaces, as the real
// server trims it) for objects of md: "" matches everything (nil); a
// search the real server's parser refuses is its 400 id 21
// (errSearchSyntax, tsl.go); one it takes that memapi cannot evaluate is
// memapi's 400 id 23 (errSearchUnsupported).
func listSearch(search string, md protoreflect.MessageDescriptor) (predicate, error) {
	if search == "" {
		return nil, nil
	}
	if !tslAccepts(search) {
		return nil, errSearchSyntax(search)
	}
	pred, err := parseSearch(search, md)
	if err != nil {
		return nil, errSearchUnsupported(err.Error())
	}
	return pred, nil
}

// parseSearch parses q for objects of md. "" matches everything (nil).
func parseSearch(q string, md protoreflect.MessageDescriptor) (predicate, error) {
	if strings.TrimSpace(q) == "" {
		return nil, nil
	}
	if len(q) > maxSearchLen {
		return nil, fmt.Errorf("longer than %d bytes", maxSearchLen)
	}
	toks, err := lexSearch(q)
	if err != nil {
		return nil, err
	}
	p := &searchParser{toks: toks, md: md}
	pred, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, fmt.Errorf("unexpected %s at %d", t, t.pos)
	}
	return pred, nil
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokString
	tokNumber
	tokPunct // = != <> ( ) ,
)

type token struct {
	kind tokKind
	text string // identifier, unquoted string, number or punctuation
	pos  int
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of query"
	case tokString:
		return strconv.Quote(t.text)
	default:
		return "'" + t.text + "'"
	}
}

func (t token) keyword(k string) bool { return t.kind == tokIdent && strings.EqualFold(t.text, k) }

func lexSearch(q string) ([]token, error) {
	var toks []token
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(q) {
					return nil, fmt.Errorf("unterminated string at %d", i)
				}
				if q[j] == '\'' {
					if j+1 < len(q) && q[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(q[j])
				j++
			}
			toks = append(toks, token{kind: tokString, text: b.String(), pos: i})
			i = j + 1
		case c == '=' || c == '(' || c == ')' || c == ',':
			toks = append(toks, token{kind: tokPunct, text: string(c), pos: i})
			i++
		case c == '!' && i+1 < len(q) && q[i+1] == '=', c == '<' && i+1 < len(q) && q[i+1] == '>':
			toks = append(toks, token{kind: tokPunct, text: "!=", pos: i})
			i += 2
		case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(q) && strings.IndexByte("0123456789.eE+-", q[j]) >= 0 {
				j++
			}
			toks = append(toks, token{kind: tokNumber, text: q[i:j], pos: i})
			i = j
		case c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z'):
			j := i + 1
			for j < len(q) && (q[j] == '_' || (q[j]|0x20 >= 'a' && q[j]|0x20 <= 'z') || (q[j] >= '0' && q[j] <= '9')) {
				j++
			}
			toks = append(toks, token{kind: tokIdent, text: q[i:j], pos: i})
			i = j
		default:
			return nil, fmt.Errorf("unsupported character %q at %d", c, i)
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(q)}), nil
}

type searchParser struct {
	toks []token
	i    int
	md   protoreflect.MessageDescriptor
}

func (p *searchParser) peek() token { return p.toks[p.i] }

func (p *searchParser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *searchParser) expect(punct string) error {
	if t := p.next(); t.kind != tokPunct || t.text != punct {
		return fmt.Errorf("want '%s' at %d, got %s", punct, t.pos, t)
	}
	return nil
}

func (p *searchParser) or(depth int) (predicate, error) {
	left, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.peek().keyword("or") {
		p.next()
		right, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l := left
		left = func(m protoreflect.Message) bool { return l(m) || right(m) }
	}
	return left, nil
}

func (p *searchParser) and(depth int) (predicate, error) {
	left, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for p.peek().keyword("and") {
		p.next()
		right, err := p.term(depth)
		if err != nil {
			return nil, err
		}
		l := left
		left = func(m protoreflect.Message) bool { return l(m) && right(m) }
	}
	return left, nil
}

func (p *searchParser) term(depth int) (predicate, error) {
	t := p.next()
	if t.kind == tokPunct && t.text == "(" {
		if depth >= maxSearchDepth {
			return nil, fmt.Errorf("nested deeper than %d", maxSearchDepth)
		}
		pred, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		return pred, p.expect(")")
	}
	if t.kind != tokIdent {
		return nil, fmt.Errorf("want a field name at %d, got %s", t.pos, t)
	}
	for _, kw := range []string{"and", "or", "not", "like", "ilike", "in"} {
		if t.keyword(kw) {
			if kw == "not" {
				return nil, fmt.Errorf("'not' is not supported (at %d)", t.pos)
			}
			return nil, fmt.Errorf("want a field name at %d, got %s", t.pos, t)
		}
	}
	get, kind, err := p.field(t)
	if err != nil {
		return nil, err
	}
	op := p.next()
	switch {
	case op.kind == tokPunct && (op.text == "=" || op.text == "!="):
		v, err := p.value(kind)
		if err != nil {
			return nil, err
		}
		eq := op.text == "="
		return func(m protoreflect.Message) bool {
			got, ok := get(m)
			return ok && (got == v) == eq
		}, nil
	case op.keyword("like"), op.keyword("ilike"):
		if kind != protoreflect.StringKind {
			return nil, fmt.Errorf("%s needs a text field, %s is not one", op.text, t.text)
		}
		pat := p.next()
		if pat.kind != tokString {
			return nil, fmt.Errorf("want a quoted pattern at %d, got %s", pat.pos, pat)
		}
		re, err := likeRegexp(pat.text, op.keyword("ilike"))
		if err != nil {
			return nil, err
		}
		return func(m protoreflect.Message) bool {
			got, ok := get(m)
			return ok && re.MatchString(got.text)
		}, nil
	case op.keyword("in"):
		if err := p.expect("("); err != nil {
			return nil, err
		}
		var vals []searchValue
		for {
			v, err := p.value(kind)
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
			if p.peek().kind == tokPunct && p.peek().text == "," {
				p.next()
				continue
			}
			break
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		return func(m protoreflect.Message) bool {
			got, ok := get(m)
			return ok && slices.Contains(vals, got)
		}, nil
	default:
		return nil, fmt.Errorf("unsupported operator %s at %d (supported: =, !=, <>, like, ilike, in)", op, op.pos)
	}
}

// field resolves a field name to a getter returning its value (a string or
// a float64) and whether it is set, and to the kind it compares as.
func (p *searchParser) field(t token) (getter, protoreflect.Kind, error) {
	if t.text == "id" {
		md := p.md.Fields().ByName(metadataName)
		if md == nil {
			return nil, 0, fmt.Errorf("unknown field %q", t.text)
		}
		id := md.Message().Fields().ByName("id")
		return func(m protoreflect.Message) (searchValue, bool) {
			return searchValue{text: m.Get(md).Message().Get(id).String()}, true
		}, protoreflect.StringKind, nil
	}
	fd := p.md.Fields().ByName(protoreflect.Name(t.text))
	if fd == nil || fd.Name() == metadataName {
		return nil, 0, fmt.Errorf("unknown field %q", t.text)
	}
	if fd.IsList() || fd.IsMap() {
		return nil, 0, fmt.Errorf("field %q cannot be searched", t.text)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return func(m protoreflect.Message) (searchValue, bool) {
			if fd.HasPresence() && !m.Has(fd) {
				return searchValue{}, false
			}
			return searchValue{text: m.Get(fd).String()}, true
		}, protoreflect.StringKind, nil
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return func(m protoreflect.Message) (searchValue, bool) {
			if fd.HasPresence() && !m.Has(fd) {
				return searchValue{}, false
			}
			return searchValue{num: float64(m.Get(fd).Int())}, true
		}, protoreflect.DoubleKind, nil
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		return func(m protoreflect.Message) (searchValue, bool) {
			if fd.HasPresence() && !m.Has(fd) {
				return searchValue{}, false
			}
			return searchValue{num: m.Get(fd).Float()}, true
		}, protoreflect.DoubleKind, nil
	default:
		return nil, 0, fmt.Errorf("field %q cannot be searched", t.text)
	}
}

// value reads a literal compared with a field of kind (StringKind or
// DoubleKind): text fields take quoted strings, numeric fields numbers
// (quoted or not, as SQL casts '5').
func (p *searchParser) value(kind protoreflect.Kind) (searchValue, error) {
	t := p.next()
	switch {
	case kind == protoreflect.StringKind && t.kind == tokString:
		return searchValue{text: t.text}, nil
	case kind == protoreflect.DoubleKind && (t.kind == tokNumber || t.kind == tokString):
		f, err := strconv.ParseFloat(strings.TrimSpace(t.text), 64)
		if err != nil {
			return searchValue{}, fmt.Errorf("want a number at %d, got %s", t.pos, t)
		}
		return searchValue{num: f}, nil
	case kind == protoreflect.StringKind:
		return searchValue{}, fmt.Errorf("want a quoted string at %d, got %s", t.pos, t)
	default:
		return searchValue{}, fmt.Errorf("want a number at %d, got %s", t.pos, t)
	}
}

// likeRegexp turns an SQL LIKE pattern into an anchored regexp.
func likeRegexp(pat string, fold bool) (*regexp.Regexp, error) {
	var b strings.Builder
	if fold {
		b.WriteString("(?i)")
	}
	b.WriteString(`(?s)\A`)
	escaped := false
	for _, r := range pat {
		switch {
		case escaped:
			b.WriteString(regexp.QuoteMeta(string(r)))
			escaped = false
		case r == '\\':
			escaped = true
		case r == '%':
			b.WriteString(".*")
		case r == '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pat, err)
	}
	return re, nil
}
