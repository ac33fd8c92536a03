package memapi_test

// The REST lists' orderBy and fields parameters, held to the real server's
// code (read, not measured): rh-trex's NewListArguments, rh-trex-ai's
// cleanOrderBy/getField (pkg/db/sql_helpers.go), generic list
// (pkg/services/generic.go: ORDER BY before OFFSET/LIMIT, checked before
// the search, judged by PostgreSQL when the page is fetched) and
// presenters.SliceFilter, and the plugins' list handlers.

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// orderFixture is five sessions, created in this (database) order with
// the client's created_at, so that name, created_at and project_id each
// order them differently.
var orderFixture = []struct{ name, created, project string }{
	{"carol", "2021-01-03T00:00:00Z", "pa"},
	{"alice", "2021-01-05T00:00:00Z", "pb"},
	{"erin", "2021-01-01T00:00:00Z", "pa"},
	{"bob", "2021-01-04T00:00:00Z", ""}, // project_id NULL
	{"dave", "2021-01-02T00:00:00Z", "pa"},
}

func seedOrderFixture(t *testing.T, rc restClient) {
	t.Helper()
	for _, s := range orderFixture {
		body := `{"name":"` + s.name + `","created_at":"` + s.created + `"`
		if s.project != "" {
			body += `,"project_id":"` + s.project + `"`
		}
		if code, b := rc.do("POST", "/sessions", body+"}"); code != http.StatusCreated {
			t.Fatalf("create %s: %d %s", s.name, code, b)
		}
	}
}

// query builds a query string from key, value pairs.
func query(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

// listKeys GETs a list and returns its total and, for each item, its
// name or, for project settings, its project_id.
func listKeys(t *testing.T, rc restClient, path string, q url.Values) (int32, []string) {
	t.Helper()
	code, body := rc.do("GET", path+"?"+q.Encode(), "")
	if code != http.StatusOK {
		t.Fatalf("GET %s?%s: %d %s", path, q.Encode(), code, body)
	}
	var l restapi.List
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	if int(l.Size) != len(l.Items) {
		t.Errorf("GET %s?%s: size %d with %d items", path, q.Encode(), l.Size, len(l.Items))
	}
	keys := []string{}
	for _, it := range l.Items {
		var o struct {
			Name      string `json:"name"`
			ProjectID string `json:"project_id"`
		}
		if err := json.Unmarshal(it, &o); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(path, "project_settings") {
			keys = append(keys, o.ProjectID)
		} else {
			keys = append(keys, o.Name)
		}
	}
	return l.Total, keys
}

// pages reads pages 1 to 3 of size 2 of a sessions list and returns them
// joined, pages separated by " | ".
func pages(t *testing.T, rc restClient, q url.Values) string {
	t.Helper()
	var out []string
	for _, page := range []string{"1", "2", "3"} {
		q.Set("page", page)
		q.Set("size", "2")
		total, names := listKeys(t, rc, "/sessions", q)
		if total != int32(len(orderFixture)) {
			t.Errorf("%s: total %d, want %d", q.Encode(), total, len(orderFixture))
		}
		out = append(out, strings.Join(names, ","))
	}
	return strings.Join(out, " | ")
}

// TestRESTListOrderBy: orderBy orders the whole list before it is cut into
// pages, by a text and a timestamp column, each way (asc by default);
// NULL sorts last ascending and first descending (PostgreSQL); later
// items break ties; names fold to lower case and may be qualified by the
// table; rows still tied keep database order (memapi's choice).
func TestRESTListOrderBy(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	seedOrderFixture(t, rc)
	for _, tc := range []struct{ orderBy, want string }{
		{"name", "alice,bob | carol,dave | erin"},
		{"name asc", "alice,bob | carol,dave | erin"},
		{"name desc", "erin,dave | carol,bob | alice"},
		{"created_at", "erin,dave | carol,bob | alice"},
		{"created_at desc", "alice,bob | carol,dave | erin"},
		{"project_id, name desc", "erin,dave | carol,alice | bob"},
		{"project_id desc,name", "bob,alice | carol,dave | erin"},
		{"project_id", "carol,erin | dave,alice | bob"}, // the pa tie in database order
		{" NAME desc , sessions.created_at ", "erin,dave | carol,bob | alice"},
		{"Sessions.Name desc", "erin,dave | carol,bob | alice"},
		{`"name" desc`, "erin,dave | carol,bob | alice"},
		{"deleted_at,interactive desc,updated_at", "carol,alice | erin,bob | dave"}, // all tied but updated_at: creation order
	} {
		if got := pages(t, rc, query("orderBy", tc.orderBy)); got != tc.want {
			t.Errorf("orderBy=%q: %s, want %s", tc.orderBy, got, tc.want)
		}
	}

	// Projects and project settings order the same way.
	for _, name := range []string{"pb", "pc", "pa"} {
		if code, b := rc.do("POST", "/projects", `{"name":"`+name+`"}`); code != http.StatusCreated {
			t.Fatalf("create project: %d %s", code, b)
		}
		if code, b := rc.do("POST", "/project_settings", `{"project_id":"`+name+`"}`); code != http.StatusCreated {
			t.Fatalf("create settings: %d %s", code, b)
		}
	}
	if _, got := listKeys(t, rc, "/projects", query("orderBy", "name desc", "size", "2")); strings.Join(got, ",") != "pc,pb" {
		t.Errorf("projects by name desc: %v, want pc,pb", got)
	}
	if _, got := listKeys(t, rc, "/project_settings", query("orderBy", "project_id", "page", "2", "size", "2")); strings.Join(got, ",") != "pc" {
		t.Errorf("settings by project_id, page 2: %v, want pc", got)
	}
}

// TestRESTListOrderByWithSearch: the order applies to what the search and
// the sessions list's project_id leave, and paging cuts that.
func TestRESTListOrderByWithSearch(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	seedOrderFixture(t, rc)
	for _, tc := range []struct {
		q     url.Values
		total int32
		want  string
	}{
		{query("project_id", "pa", "search", "name != 'dave'", "orderBy", "created_at desc", "size", "1"), 2, "carol"},
		{query("project_id", "pa", "search", "name != 'dave'", "orderBy", "created_at desc", "size", "1", "page", "2"), 2, "erin"},
		{query("project_id", "pa", "orderBy", "name desc", "size", "2", "page", "2"), 3, "carol"},
		{query("search", "name in ('alice', 'bob', 'carol')", "orderBy", "name desc", "size", "2"), 3, "carol,bob"},
		{query("search", "project_id = 'pa' or project_id = 'pb'", "orderBy", "project_id desc, created_at", "size", "3"), 4, "alice,erin,dave"},
	} {
		total, names := listKeys(t, rc, "/sessions", tc.q)
		if total != tc.total || strings.Join(names, ",") != tc.want {
			t.Errorf("%s: total %d %v, want %d [%s]", tc.q.Encode(), total, names, tc.total, tc.want)
		}
	}
}

// TestRESTListOrderByRefused: rh-trex's checks answer 400 id 21 "bad order
// value '<item>'" (the item untrimmed, as split at commas) before the
// search is parsed; what PostgreSQL refuses answers 500 id 9 with its
// error after the search was parsed, even on an empty table; SQL memapi
// does not evaluate is its own 400 id 23. The sessions list's project_id
// is checked before all of them.
func TestRESTListOrderByRefused(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	seedOrderFixture(t, rc)
	const dbErr = "Unable to list resources: ERROR: "
	long := strings.Repeat("x", 70)
	for _, tc := range []struct {
		path    string
		q       url.Values
		code    int
		id      string
		reason  string
		comment string
	}{
		{"/sessions", query("orderBy", "name up"), 400, "21", "bad order value 'name up'", "unknown direction"},
		{"/sessions", query("orderBy", "name ASC"), 400, "21", "bad order value 'name ASC'", "directions are lower case"},
		{"/sessions", query("orderBy", "name  asc"), 400, "21", "bad order value 'name  asc'", "two spaces: three parts"},
		{"/sessions", query("orderBy", "name asc desc"), 400, "21", "bad order value 'name asc desc'", ""},
		{"/sessions", query("orderBy", "a.b.c"), 400, "21", "bad order value 'a.b.c'", "two dots"},
		{"/sessions", query("orderBy", " name, created_at sideways "), 400, "21", "bad order value ' created_at sideways'", "the item as split"},
		{"/sessions", query("orderBy", "colour"), 500, "9", dbErr + `column "colour" does not exist (SQLSTATE 42703)`, ""},
		{"/sessions", query("orderBy", "kind desc"), 500, "9", dbErr + `column "kind" does not exist (SQLSTATE 42703)`, "not a column"},
		{"/sessions", query("orderBy", `"Name"`), 500, "9", dbErr + `column "Name" does not exist (SQLSTATE 42703)`, "quoted: not folded"},
		{"/sessions", query("orderBy", long), 500, "9", dbErr + `column "` + long[:63] + `" does not exist (SQLSTATE 42703)`, "truncated"},
		{"/sessions", query("orderBy", "name, sessions.colour desc"), 500, "9", dbErr + "column sessions.colour does not exist (SQLSTATE 42703)", ""},
		{"/sessions", query("orderBy", "projects.name"), 500, "9", dbErr + `missing FROM-clause entry for table "projects" (SQLSTATE 42P01)`, ""},
		{"/sessions", query("orderBy", "name,"), 500, "9", dbErr + `syntax error at or near "asc" (SQLSTATE 42601)`, "an empty item"},
		{"/project_settings", query("orderBy", "name"), 500, "9", dbErr + `column "name" does not exist (SQLSTATE 42703)`, "empty table"},
		{"/sessions", query("orderBy", "length(name)"), 400, "23", "bad order value 'length(name)': memapi orders by column names only", ""},
		{"/sessions", query("orderBy", "1 desc"), 400, "23", "bad order value '1 desc': memapi orders by column names only", "a position"},
		{"/sessions", query("orderBy", "user"), 400, "23", "bad order value 'user': memapi orders by column names only", "CURRENT_USER"},
		// Which comes first.
		{"/sessions", query("orderBy", "name up", "search", "name ="), 400, "21", "bad order value 'name up'", "order before search"},
		{"/sessions", query("orderBy", "colour", "search", "name ="), 400, "21", "Failed to parse search query: name =", "search before the database"},
		{"/sessions", query("orderBy", "colour", "search", "name < 'a'"), 400, "23", "Failed to parse search query: unsupported character '<' at 5", ""},
		{"/sessions", query("orderBy", "name up", "project_id", "p a"), 400, "8", "invalid project_id format", "project_id first"},
	} {
		path := tc.path + "?" + tc.q.Encode()
		code, body := rc.do("GET", path, "")
		wantREST(t, "GET "+path+" ("+tc.comment+")", code, body, tc.code, tc.id, tc.reason)
	}
}

// getExpectingNoAnswer GETs url on a connection of its own and returns an
// error unless the server ended the connection without an answer.
func getExpectingNoAnswer(t *testing.T, url string) error {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body) //nolint:errcheck // for the message only
		_ = resp.Body.Close()         // the answer is the failure
		return errors.New("answered " + resp.Status + ": " + string(b))
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return errors.New("failed otherwise than by the connection's end: " + err.Error())
	}
	return nil
}

// TestRESTListFields: the real list handlers pass their items, a slice,
// to presenters.SliceFilter whenever fields (trimmed of spaces) is not
// empty, and SliceFilter's reflect FieldByName("Kind") panics on a slice:
// the connection ends without an answer, on every list, empty or not,
// whatever the fields. A blank fields changes nothing; a list that fails
// first answers its error; a GET by id does not read fields.
func TestRESTListFields(t *testing.T) {
	t.Parallel()
	srv := start(t)
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	seedOrderFixture(t, rc)
	base := srv.RESTURL() + "/api/ambient/v1"
	for _, path := range []string{
		"/sessions?fields=id",
		"/sessions?fields=name,%20id&orderBy=name",
		"/sessions?fields=%2C",
		"/sessions?fields=no_such_field",
		"/sessions?fields=name&project_id=nobody",
		"/projects?fields=id",
		"/project_settings?fields=project_id",
		"/users?fields=username",
	} {
		if err := getExpectingNoAnswer(t, base+path); err != nil {
			t.Errorf("GET %s: %v", path, err)
		}
	}

	if total, names := listKeys(t, rc, "/sessions", query("fields", "  ", "orderBy", "name")); total != 5 || strings.Join(names, ",") != "alice,bob,carol,dave,erin" {
		t.Errorf("blank fields: %d %v, want the whole list", total, names)
	}
	code, body := rc.do("GET", "/sessions?fields=id&orderBy=colour", "")
	wantREST(t, "fields with a refused orderBy", code, body, http.StatusInternalServerError, "9",
		`Unable to list resources: ERROR: column "colour" does not exist (SQLSTATE 42703)`)
	code, body = rc.do("GET", "/sessions?fields=id&search=name%20%3D", "")
	wantREST(t, "fields with a refused search", code, body, http.StatusBadRequest, "21", "Failed to parse search query: name =")

	code, body = rc.do("GET", "/sessions?"+query("search", "name = 'bob'").Encode(), "")
	var l restapi.List
	if err := json.Unmarshal(body, &l); err != nil || code != http.StatusOK || len(l.Items) != 1 {
		t.Fatalf("bob: %d %s", code, body)
	}
	id := decodeSession(t, l.Items[0]).GetMetadata().GetId()
	code, body = rc.do("GET", "/sessions/"+id+"?fields=id", "")
	if s := decodeSession(t, body); code != http.StatusOK || s.GetName() != "bob" || s.GetLlmModel() == "" {
		t.Errorf("GET by id with fields: %d %s, want the whole session", code, body)
	}
}

// jsonText is s as a JSON string carries it (encoding/json turns invalid
// UTF-8 into U+FFFD), for comparing reasons that quote the input.
func jsonText(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// dbRefusal is what memapi answers, as the real server does, for an
// ORDER BY PostgreSQL refuses.
var dbRefusal = regexp.MustCompile(`(?s)^Unable to list resources: ERROR: (column (".*"|.+\..+) does not exist \(SQLSTATE 42703\)|` +
	`missing FROM-clause entry for table ".*" \(SQLSTATE 42P01\)|syntax error at or near "asc" \(SQLSTATE 42601\))$`)

// FuzzOrderBy: no orderBy and fields panic memapi or get an answer other
// than the real server's kinds: 200 with the whole list (ordered), rh-trex's
// 400 id 21 quoting one item, memapi's 400 id 23 for SQL it does not
// evaluate, or the 500 id 9 of a PostgreSQL refusal (the real server's
// answer to an unknown column; memapi sends no other 5xx). fields changes
// nothing when blank and otherwise ends the connection of every list that
// succeeds (the real SliceFilter panic); a list that fails answers as
// without it.
func FuzzOrderBy(f *testing.F) {
	for _, seed := range [][2]string{
		{"name", ""}, {"name desc, created_at", ""}, {"project_id desc,llm_temperature", "id"},
		{"Sessions.Name", " "}, {"a.b.c", "name"}, {"colour", ""}, {`"Name"`, ","}, {"name,", ""},
		{"length(name)", ""}, {"user", ""}, {"projects.id", ""}, {"\xff", "\x00"}, {"  ", "  "},
		{`""""`, ""}, {"name ASC", "id,name"}, {"sessions.select desc", ""}, {`"a""b".x`, ""},
	} {
		f.Add(seed[0], seed[1])
	}
	srv := start(f)
	gc := client(f, srv, testToken)
	for _, req := range []*ambientv1.CreateSessionRequest{
		{Name: "b", ProjectId: proto.String("p1"), LlmTemperature: proto.Float64(math.NaN())},
		{Name: "a", LlmTemperature: proto.Float64(0.2)},
		{Name: "B", ProjectId: proto.String("p0"), Timeout: proto.Int32(5)},
		{Name: "c", ProjectId: proto.String("p1")},
	} {
		if _, err := gc.CreateSession(f.Context(), req); err != nil {
			f.Fatal(err)
		}
	}
	const sessions = 4
	base := srv.RESTURL() + "/api/ambient/v1/sessions?"
	f.Fuzz(func(t *testing.T, orderBy, fields string) {
		rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
		q := query("orderBy", orderBy, "size", "500")
		code, body := rc.do("GET", "/sessions?"+q.Encode(), "")
		var items []string
		var e restapi.Error
		switch code {
		case http.StatusOK:
			var l restapi.List
			if err := json.Unmarshal(body, &l); err != nil || l.Total != sessions || len(l.Items) != sessions {
				t.Fatalf("orderBy=%q: %s (%v), want the %d sessions", orderBy, body, err, sessions)
			}
			for _, it := range l.Items {
				items = append(items, string(it))
			}
		case http.StatusBadRequest, http.StatusInternalServerError:
			e = decodeError(t, body)
			ok := false
			switch e.ID {
			case "21":
				for _, arg := range strings.Split(strings.Trim(orderBy, " "), ",") {
					ok = ok || e.Reason == jsonText(t, "bad order value '"+arg+"'")
				}
			case "23":
				ok = strings.HasPrefix(e.Reason, "bad order value '") && strings.HasSuffix(e.Reason, "': memapi orders by column names only")
			case "9":
				ok = dbRefusal.MatchString(e.Reason)
			}
			if !ok || (code == http.StatusInternalServerError) != (e.ID == "9") {
				t.Fatalf("orderBy=%q: %d %s", orderBy, code, body)
			}
		default:
			t.Fatalf("orderBy=%q: %d %s", orderBy, code, body)
		}

		q.Set("fields", fields)
		if strings.Trim(fields, " ") != "" && code == http.StatusOK {
			if err := getExpectingNoAnswer(t, base+q.Encode()); err != nil {
				t.Fatalf("orderBy=%q fields=%q: %v", orderBy, fields, err)
			}
			return
		}
		code2, body2 := rc.do("GET", "/sessions?"+q.Encode(), "")
		if code2 != code {
			t.Fatalf("orderBy=%q fields=%q: %d %s, want %d as without fields", orderBy, fields, code2, body2, code)
		}
		if code != http.StatusOK {
			if e2 := decodeError(t, body2); e2.ID != e.ID || e2.Reason != e.Reason {
				t.Fatalf("orderBy=%q fields=%q: %s, want %s as without fields", orderBy, fields, body2, body)
			}
			return
		}
		var l restapi.List
		if err := json.Unmarshal(body2, &l); err != nil || len(l.Items) != len(items) {
			t.Fatalf("orderBy=%q fields=%q: %s (%v)", orderBy, fields, body2, err)
		}
		for i, it := range l.Items {
			if string(it) != items[i] {
				t.Fatalf("orderBy=%q fields=%q: item %d %s, want %s as without fields", orderBy, fields, i, it, items[i])
			}
		}
	})
}

// TestRESTListOrderByNumbers: numbers order numerically, NaN above every
// other number and NULL (an unset optional field) above NaN, as
// PostgreSQL's float8 and integer columns do.
func TestRESTListOrderByNumbers(t *testing.T) {
	t.Parallel()
	srv := start(t)
	gc := client(t, srv, testToken)
	for _, req := range []*ambientv1.CreateSessionRequest{
		{Name: "n1", LlmTemperature: proto.Float64(0.5), Timeout: proto.Int32(10)},
		{Name: "n2", LlmTemperature: proto.Float64(math.NaN())},
		{Name: "n3", LlmTemperature: proto.Float64(-0.1), Timeout: proto.Int32(3)},
		{Name: "n4", LlmTemperature: proto.Float64(2), Timeout: proto.Int32(-1)},
	} {
		if _, err := gc.CreateSession(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	rc := restClient{t: t, base: srv.RESTURL(), token: testToken}
	for _, tc := range []struct{ orderBy, want string }{
		{"llm_temperature", "n3,n1,n4,n2"},
		{"llm_temperature desc", "n2,n4,n1,n3"},
		{"timeout", "n4,n3,n1,n2"},
		{"timeout desc", "n2,n1,n3,n4"},
	} {
		if _, got := listKeys(t, rc, "/sessions", query("orderBy", tc.orderBy)); strings.Join(got, ",") != tc.want {
			t.Errorf("orderBy=%q: %v, want %s", tc.orderBy, got, tc.want)
		}
	}
}
