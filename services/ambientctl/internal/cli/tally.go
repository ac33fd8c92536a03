package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func tallyCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "tally",
		Short: "Show event-tally's counts of ADDED/MODIFIED/DELETED per resource",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.tally(cmd.Context(), cmd.OutOrStdout())
		},
	}
}

func (o *options) tally(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, joinURL(o.tallyURL, "/tally"), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := o.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("reach event-tally at %s (is the dev stack running? or pass --tally-url): %w", o.tallyURL, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read tally: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if err := redirected(resp, "--tally-url"); err != nil {
			return err
		}
		return fmt.Errorf("event-tally answered %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	if o.output == "json" {
		_, err = w.Write(append(bytes.TrimSpace(raw), '\n'))
		return err
	}
	return printTally(w, raw)
}

// tallyDoc is the subset of event-tally's /tally document ambientctl shows.
type tallyDoc struct {
	Resources map[string]struct {
		Added     int       `json:"added"`
		Modified  int       `json:"modified"`
		Deleted   int       `json:"deleted"`
		IDs       int       `json:"ids"`
		LastEvent time.Time `json:"last_event_time"`
	} `json:"resources"`
}

func printTally(w io.Writer, raw []byte) error {
	var doc tallyDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("decode tally: %w", err)
	}
	rows := [][]string{}
	for _, r := range []string{"sessions", "projects", "project_settings"} {
		t := doc.Resources[r]
		last := "-"
		if !t.LastEvent.IsZero() {
			last = t.LastEvent.Format(time.RFC3339)
		}
		rows = append(rows, []string{r, fmt.Sprint(t.Added), fmt.Sprint(t.Modified), fmt.Sprint(t.Deleted), fmt.Sprint(t.IDs), last})
	}
	return printTable(w, []string{"RESOURCE", "ADDED", "MODIFIED", "DELETED", "IDS", "LAST EVENT"}, rows)
}
