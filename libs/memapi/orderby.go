package memapi

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/restapi"
)

// The REST lists' orderBy parameter, as the real server takes it (read from
// its code, not measured): rh-trex's NewListArguments trims the parameter
// of spaces and splits it at commas; rh-trex-ai's cleanOrderBy
// (pkg/db/sql_helpers.go) trims each item of spaces and splits it at
// single spaces into "<field>" (ascending) or "<field> <direction>", the
// direction exactly "asc" or "desc"; getField refuses a field of more
// than one dot and a field on the resource's disallowed list, which no
// ambient plugin fills. Any other item is 400 id 21 "bad order value
// '<item>'", quoting the item as split, untrimmed; it comes before the
// search is parsed (generic.go's buildOrderBy runs before buildSearch).
// The field is not checked against the table: gorm's Order pastes
// "<field> <direction>" into the SQL, and PostgreSQL judges it when the
// page is fetched, after the search was parsed. What it refuses,
// loadList answers 500 id 9 "Unable to list resources: <pgconn's error
// text>".
//
// memapi evaluates the fields that are column names, as PostgreSQL reads
// them: an identifier, folded to lower case unless double-quoted, and
// truncated to 63 bytes; optionally qualified with the table's name. A
// column the table lacks is PostgreSQL's 42703, a qualifier naming
// another table its 42P01, and an empty field (an item "" between commas)
// its syntax error at the "asc" rh-trex appends. Other SQL (expressions,
// positions, keywords) PostgreSQL may take; memapi does not evaluate it
// and answers its own 400 id 23 (errOrderUnsupported). Ordering itself is
// PostgreSQL's: NULL (an unset optional field) above every value, so last
// ascending and first descending; NaN above every other number; text
// compared byte by byte (see compareText); each item breaking the ties of
// the ones before it. Rows still tied keep database order (memapi's
// choice: PostgreSQL leaves their order unspecified, and its top-N sort
// for a LIMIT is not stable).

// pgMaxIdentLen is PostgreSQL's NAMEDATALEN - 1: it truncates longer
// identifiers (with a notice) before it looks them up.
const pgMaxIdentLen = 63

// orderItem is one item of an orderBy parameter that passed rh-trex's
// checks: a field, which PostgreSQL reads as SQL, and a direction.
type orderItem struct {
	arg   string // the item as the client wrote it, for memapi's own errors
	field string
	desc  bool
}

// parseOrderBy checks an orderBy parameter as rh-trex does and returns its
// items (none for an absent or blank parameter).
func parseOrderBy(param string) ([]orderItem, error) {
	v := strings.Trim(param, " ")
	if v == "" {
		return nil, nil
	}
	var items []orderItem
	for _, arg := range strings.Split(v, ",") {
		parts := strings.Split(strings.Trim(arg, " "), " ")
		if len(parts) > 2 || strings.Count(parts[0], ".") > 1 {
			return nil, errBadOrder(arg)
		}
		it := orderItem{arg: arg, field: parts[0]}
		if len(parts) == 2 {
			switch parts[1] {
			case "asc":
			case "desc":
				it.desc = true
			default:
				return nil, errBadOrder(arg)
			}
		}
		items = append(items, it)
	}
	return items, nil
}

// compareFunc orders two objects: negative, zero or positive.
type compareFunc func(a, b protoreflect.Message) int

// table is what an ORDER BY of one kind's list can name: the table's name
// and its columns.
type table struct {
	name    string
	columns map[string]compareFunc
}

// newTable describes the table of objects of md: id, the timestamps of
// rh-trex's db.Model (deleted_at always NULL, as lists leave deleted rows
// out), each scalar or timestamp field under its proto name (the plugins'
// columns are gorm's snake case of their Go fields, the same names), and
// nullColumns, columns the real table has and the wire contract lacks
// (always NULL here).
func newTable(name string, md protoreflect.MessageDescriptor, nullColumns ...string) table {
	t := table{name: name, columns: map[string]compareFunc{}}
	null := func(_, _ protoreflect.Message) int { return 0 }
	t.columns["deleted_at"] = null
	for _, c := range nullColumns {
		t.columns[c] = null
	}
	if meta := md.Fields().ByName(metadataName); meta != nil {
		fields := meta.Message().Fields()
		for _, fd := range []protoreflect.FieldDescriptor{fields.ByName("id"), fields.ByName("created_at"), fields.ByName("updated_at")} {
			c := fieldColumn(fd)
			t.columns[string(fd.Name())] = func(a, b protoreflect.Message) int {
				return c(a.Get(meta).Message(), b.Get(meta).Message())
			}
		}
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Name() == metadataName || fd.IsList() || fd.IsMap() {
			continue
		}
		if c := fieldColumn(fd); c != nil {
			t.columns[string(fd.Name())] = c
		}
	}
	return t
}

// fieldColumn compares by the field fd, unset (SQL NULL) above every
// value; nil for a field that is no column.
func fieldColumn(fd protoreflect.FieldDescriptor) compareFunc {
	set := func(m protoreflect.Message) bool { return !fd.HasPresence() || m.Has(fd) }
	var values func(a, b protoreflect.Value) int
	switch fd.Kind() {
	case protoreflect.StringKind:
		values = func(a, b protoreflect.Value) int { return compareText(a.String(), b.String()) }
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		values = func(a, b protoreflect.Value) int { return cmp.Compare(a.Int(), b.Int()) }
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		values = func(a, b protoreflect.Value) int { return compareFloat(a.Float(), b.Float()) }
	case protoreflect.BoolKind:
		values = func(a, b protoreflect.Value) int { return compareBool(a.Bool(), b.Bool()) }
	case protoreflect.MessageKind:
		if fd.Message().FullName() != (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName() {
			return nil
		}
		values = func(a, b protoreflect.Value) int {
			return compareTime(a.Message().Interface().(*timestamppb.Timestamp), b.Message().Interface().(*timestamppb.Timestamp))
		}
	default:
		return nil
	}
	return func(a, b protoreflect.Message) int {
		as, bs := set(a), set(b)
		switch {
		case !as && !bs:
			return 0
		case !as:
			return 1
		case !bs:
			return -1
		}
		return values(a.Get(fd), b.Get(fd))
	}
}

// compareText compares text as PostgreSQL does under the "C" collation:
// byte by byte, which for UTF-8 is code point order. The real server's
// order depends on the collation its database was created with, which
// nothing in its code sets: the official postgres image's default is
// en_US.utf8, whose order comes from the C library (it folds case at
// the first level, so "a" < "B" < "b", where C has "B" < "a" < "b", and
// changed with glibc 2.28). C is the only collation whose order is fully
// defined, so memapi uses it; names of lower-case letters, digits and
// '-' order alike under both.
func compareText(a, b string) int { return strings.Compare(a, b) }

// compareFloat is PostgreSQL's float8 order: NaN equals NaN and is above
// every other number (Go's cmp.Compare puts it below).
func compareFloat(a, b float64) int {
	switch an, bn := math.IsNaN(a), math.IsNaN(b); {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	}
	return cmp.Compare(a, b)
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	default:
		return 1
	}
}

// compareTime compares timestamps (a nil one, which stored objects do not
// have for a set field, as the zero time).
func compareTime(a, b *timestamppb.Timestamp) int {
	if c := cmp.Compare(a.GetSeconds(), b.GetSeconds()); c != 0 {
		return c
	}
	return cmp.Compare(a.GetNanos(), b.GetNanos())
}

// order returns how items order objects of t (nil for no items), or the
// answer of PostgreSQL and the real server to an ORDER BY it refuses:
// syntax first, for the whole statement, then each item's names in turn,
// as PostgreSQL parses before it analyzes.
func (t table) order(items []orderItem) (compareFunc, error) {
	if len(items) == 0 {
		return nil, nil
	}
	type ref struct{ qualifier, column string }
	refs := make([]ref, len(items))
	for i, it := range items {
		if it.field == "" {
			return nil, errListQuery(`syntax error at or near "asc"`, "42601")
		}
		first, rest, qualified := strings.Cut(it.field, ".")
		name, ok := sqlIdentifier(first, true)
		if !ok {
			return nil, errOrderUnsupported(it.arg)
		}
		refs[i].column = name
		if qualified {
			// After a dot PostgreSQL takes any word as a column label,
			// keywords included.
			col, ok := sqlIdentifier(rest, false)
			if !ok {
				return nil, errOrderUnsupported(it.arg)
			}
			refs[i] = ref{qualifier: name, column: col}
		}
	}
	cmps := make([]compareFunc, len(items))
	for i, r := range refs {
		if r.qualifier != "" && r.qualifier != t.name {
			return nil, errListQuery(fmt.Sprintf(`missing FROM-clause entry for table "%s"`, r.qualifier), "42P01")
		}
		c, ok := t.columns[r.column]
		switch {
		case !ok && r.qualifier != "":
			return nil, errListQuery(fmt.Sprintf("column %s.%s does not exist", r.qualifier, r.column), "42703")
		case !ok:
			return nil, errListQuery(fmt.Sprintf(`column "%s" does not exist`, r.column), "42703")
		}
		if items[i].desc {
			asc := c
			c = func(a, b protoreflect.Message) int { return -asc(a, b) }
		}
		cmps[i] = c
	}
	return func(a, b protoreflect.Message) int {
		for _, c := range cmps {
			if n := c(a, b); n != 0 {
				return n
			}
		}
		return 0
	}, nil
}

// sqlIdentifier reads s as one PostgreSQL identifier and returns the name
// it stands for: a double-quoted one as written ("" is a quote), an
// unquoted one folded to lower case (ASCII only, as PostgreSQL folds in
// UTF-8); both truncated to 63 bytes. false for anything else memapi does
// not evaluate: other SQL, invalid UTF-8 (PostgreSQL refuses the whole
// statement), a NUL, and, where keywords is set, a keyword that is not
// an unreserved one (it means something else there, or is a syntax
// error).
func sqlIdentifier(s string, keywords bool) (string, bool) {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return "", false
	}
	if strings.HasPrefix(s, `"`) {
		if len(s) < 3 || !strings.HasSuffix(s, `"`) {
			return "", false
		}
		inner := s[1 : len(s)-1]
		if strings.Count(inner, `"`) != 2*strings.Count(inner, `""`) {
			return "", false // a lone quote ends the identifier early
		}
		return truncateIdent(strings.ReplaceAll(inner, `""`, `"`)), true
	}
	if s == "" {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
		if !letter && (i == 0 || !((c >= '0' && c <= '9') || c == '$')) {
			return "", false
		}
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
	if keywords && pgKeywords[name] {
		return "", false
	}
	return truncateIdent(name), true
}

// truncateIdent cuts name to PostgreSQL's identifier length on a character
// boundary, as pg_mbcliplen does.
func truncateIdent(name string) string {
	if len(name) <= pgMaxIdentLen {
		return name
	}
	n := pgMaxIdentLen
	for n > 0 && !utf8.RuneStart(name[n]) {
		n--
	}
	return name[:n]
}

// pgKeywords are PostgreSQL's keywords that are not unreserved (reserved,
// type or function names, column-name keywords; PostgreSQL 16's
// kwlist.h): as a bare ORDER BY expression each is a syntax error or
// means something other than a column (user is CURRENT_USER, true a
// constant), so memapi does not evaluate them.
var pgKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`
		all analyse analyze and any array as asc asymmetric both case cast check collate column
		constraint create current_catalog current_date current_role current_time current_timestamp
		current_user default deferrable desc distinct do else end except false fetch for foreign
		from grant group having in initially intersect into lateral leading limit localtime
		localtimestamp not null offset on only or order placing primary references returning
		select session_user some symmetric system_user table then to trailing true union unique
		user using variadic when where window with
		authorization binary collation concurrently cross current_schema freeze full ilike inner
		is isnull join left like natural notnull outer overlaps right similar tablesample verbose
		between bigint bit boolean char character coalesce dec decimal exists extract float
		greatest grouping inout int integer interval json json_array json_arrayagg json_exists
		json_object json_objectagg json_query json_scalar json_serialize json_table json_value
		least merge_action national nchar none normalize nullif numeric out overlay position
		precision real row setof smallint substring time timestamp treat trim values varchar
		xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
		xmlroot xmlserialize xmltable`) {
		m[w] = true
	}
	return m
}()

// errBadOrder is the real server's 400 (id 21) for an orderBy item
// rh-trex's cleanOrderBy refuses: errors.BadRequest("bad order value
// '%s'"), quoting the item as split from the parameter.
func errBadOrder(arg string) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDBadRequest,
		Reason: fmt.Sprintf("bad order value '%s'", arg)}
}

// errOrderUnsupported is memapi's own 400 (id 23, as for a search it
// cannot evaluate) for an orderBy item the real server hands to
// PostgreSQL as SQL that memapi does not evaluate: PostgreSQL may order
// by it (200) or refuse it (500).
func errOrderUnsupported(arg string) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDBadSearch,
		Reason: fmt.Sprintf("bad order value '%s': memapi orders by column names only", arg)}
}

// errListQuery is the real server's answer to a list PostgreSQL refuses:
// rh-trex-ai's loadList (pkg/services/generic.go) answers
// errors.GeneralError("Unable to list resources: %s", err), 500 id 9,
// with pgconn's PgError text ("ERROR: <message> (SQLSTATE <code>)").
func errListQuery(message, sqlstate string) error {
	return &APIError{Code: codes.Internal, Status: http.StatusInternalServerError, ID: restapi.ErrorIDGeneral,
		Reason: fmt.Sprintf("Unable to list resources: ERROR: %s (SQLSTATE %s)", message, sqlstate)}
}
