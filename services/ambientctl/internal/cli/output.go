package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var jsonOut = protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}

// printJSON writes msgs as protojson (snake_case names, like the REST API).
func printJSON(w io.Writer, msgs ...proto.Message) error {
	for _, m := range msgs {
		b, err := jsonOut.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		if _, err := fmt.Fprintln(w, string(b)); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

// printJSONList writes items as one JSON array of protojson objects, "[]"
// when there are none, so a list is one document (json.load, `jq length`)
// like `dlq list -o json`.
func printJSONList[T proto.Message](w io.Writer, items []T) error {
	raw := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		b, err := jsonOut.Marshal(it)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		raw = append(raw, b)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // a prompt's "<" stays "<", as protojson writes it
	if err := enc.Encode(raw); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// printOne prints one object: with -o json a JSON object, else a table of
// one row.
func printOne[T proto.Message](o *options, cmd *cobra.Command, v T, table func(*cobra.Command, []T) error) error {
	if o.output == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	return table(cmd, []T{v})
}

// printList prints a list: with -o json one JSON array, else a table.
func printList[T proto.Message](o *options, cmd *cobra.Command, vs []T, table func(*cobra.Command, []T) error) error {
	if o.output == "json" {
		return printJSONList(cmd.OutOrStdout(), vs)
	}
	return table(cmd, vs)
}

// printTable writes rows under header with aligned columns.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	write := func(cols []string) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, cell(c))
		}
		fmt.Fprintln(tw)
	}
	write(header)
	for _, r := range rows {
		write(r)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// cell is s as a table shows it: quoted (Go syntax) when it holds a line
// break, tab, escape sequence or invalid UTF-8. The API takes any string
// as a name: raw, a line break would add a row that looks like another
// session's, a tab a column, and an escape sequence would reach the
// terminal.
func cell(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// joinURL appends path to the base URL base: a base given with a trailing
// slash ("http://host:9080/") would make "//sessions/...", which the
// agui-proxy's and event-tally's routers answer with 404.
func joinURL(base, path string) string {
	return strings.TrimRight(base, "/") + path
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
