package testenv

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// metricsHeading is the heading of the metrics reference in
// docs/operations.md.
const metricsHeading = "## Metrics"

// consumerGroupsSection is the section of the libs/group metrics, which
// every service that consumes through a group exports besides its own.
const consumerGroupsSection = "Consumer groups"

// DocMetric is one row of a metrics table of docs/operations.md#metrics.
type DocMetric struct {
	Name    string   // as served on /metrics
	Type    string   // counter, gauge or histogram
	Labels  []string // label names, as listed (none: the metric has no labels)
	Meaning string   // the row's last column
}

// Values returns the values the row's meaning gives for label, written as
// `label="value"` (e.g. `reason="forbidden"`), sorted and without repeats:
// how the docs list a label's fixed set of values.
func (m DocMetric) Values(label string) []string {
	re := regexp.MustCompile(regexp.QuoteMeta(label) + `="([^"]*)"`)
	var out []string
	for _, sub := range re.FindAllStringSubmatch(m.Meaning, -1) {
		out = append(out, sub[1])
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// MetricsDoc is the metrics reference of docs/operations.md: under
// "## Metrics", one section per service, each a line starting with
// **service** and a table whose rows read
// | `name` | type | `label`, `label` | meaning |.
// The tests that scrape a service's /metrics hold what they find to it
// (SeriesProblems), so the one parser of the tables lives here.
type MetricsDoc struct {
	sections map[string]*metricsSection
}

// metricsSection is one service's part of the reference.
type metricsSection struct {
	prose   string // the section's text outside its table
	metrics map[string]DocMetric
}

// ReadMetricsDoc parses the metrics reference of the markdown file path
// (docs/operations.md).
func ReadMetricsDoc(path string) (*MetricsDoc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read metrics reference: %w", err)
	}
	d, err := ParseMetricsDoc(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ParseMetricsDoc parses the metrics reference of a markdown document. It
// fails on a table row it cannot read, so a malformed row is not silently
// left unchecked.
func ParseMetricsDoc(doc []byte) (*MetricsDoc, error) {
	text, err := markdownSection(doc, metricsHeading)
	if err != nil {
		return nil, err
	}
	d := &MetricsDoc{sections: map[string]*metricsSection{}}
	var cur *metricsSection
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		if name, rest, ok := boldLead(trimmed); ok {
			cur = &metricsSection{prose: rest + "\n", metrics: map[string]DocMetric{}}
			d.sections[name] = cur
			continue
		}
		if cur == nil {
			continue
		}
		if !strings.HasPrefix(trimmed, "|") {
			cur.prose += line
			continue
		}
		m, ok, err := parseMetricRow(trimmed)
		if err != nil {
			return nil, err
		}
		if ok {
			cur.metrics[m.Name] = m
		}
	}
	if len(d.sections) == 0 {
		return nil, fmt.Errorf("%q has no **service** section", metricsHeading)
	}
	return d, nil
}

// boldLead splits a line that starts with a bold name ("**informer**", or
// "**kube-reconciler** (OTel ...") into the name and the rest.
func boldLead(line string) (name, rest string, ok bool) {
	after, found := strings.CutPrefix(line, "**")
	if !found {
		return "", "", false
	}
	name, rest, ok = strings.Cut(after, "**")
	return name, rest, ok && name != ""
}

// parseMetricRow reads one table row; ok is false for the header and the
// separator row.
func parseMetricRow(row string) (m DocMetric, ok bool, err error) {
	cols := strings.Split(strings.Trim(row, "|"), "|")
	if len(cols) < 4 {
		return m, false, fmt.Errorf("metrics table row %q: want 4 columns", row)
	}
	first := strings.TrimSpace(cols[0])
	if first == "metric" || strings.Trim(first, "-: ") == "" {
		return m, false, nil
	}
	names := backticked(first)
	if len(names) != 1 {
		return m, false, fmt.Errorf("metrics table row %q: want one `name` in the first column", row)
	}
	m = DocMetric{
		Name:    names[0],
		Type:    strings.TrimSpace(cols[1]),
		Labels:  backticked(cols[2]),
		Meaning: strings.TrimSpace(strings.Join(cols[3:], "|")),
	}
	if rest := strings.Trim(strings.NewReplacer("`", "", ",", "").Replace(cols[2]), " "); len(m.Labels) == 0 && rest != "" {
		return m, false, fmt.Errorf("metrics table row %q: labels %q are not `name`s", row, cols[2])
	}
	return m, true, nil
}

// backticked returns the `quoted` words of s.
func backticked(s string) []string {
	var out []string
	for i, part := range strings.Split(s, "`") {
		if i%2 == 1 {
			out = append(out, part)
		}
	}
	return out
}

// Metrics returns the metrics documented for service: its section's table,
// plus the consumer-group table when the service consumes through a group
// (its section says "plus the consumer-group metrics", or the
// consumer-group section names it among its members).
func (d *MetricsDoc) Metrics(service string) (map[string]DocMetric, error) {
	sec := d.sections[service]
	if sec == nil {
		return nil, fmt.Errorf("%s has no **%s** section", metricsHeading, service)
	}
	out := map[string]DocMetric{}
	if cg := d.sections[consumerGroupsSection]; cg != nil && service != consumerGroupsSection &&
		(strings.Contains(sec.prose, "plus the consumer-group metrics") || strings.Contains(cg.prose, service)) {
		for k, v := range cg.metrics {
			out[k] = v
		}
	}
	for k, v := range sec.metrics {
		out[k] = v
	}
	return out, nil
}

// Series is one scraped series: its metric name and its label names.
type Series struct {
	Name   string
	Labels []string
}

// errExposition reports a line of a /metrics page ParseExposition cannot
// read.
var errExposition = errors.New("unreadable exposition line")

// ParseExposition returns the series of a Prometheus text exposition (what
// /metrics serves), one per sample line.
func ParseExposition(body string) ([]Series, error) {
	var out []Series
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", errExposition, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseSample reads the name and label names of one sample line: name,
// then optionally {label="value",...} (values may hold escaped quotes,
// commas and braces), then the value.
func parseSample(line string) (Series, error) {
	end := strings.IndexAny(line, "{ ")
	if end <= 0 {
		return Series{}, errors.New("no metric name")
	}
	s := Series{Name: line[:end]}
	rest := line[end:]
	if rest[0] != '{' {
		return s, nil
	}
	rest = rest[1:]
	for {
		rest = strings.TrimLeft(rest, " ,")
		if strings.HasPrefix(rest, "}") {
			return s, nil
		}
		name, after, ok := strings.Cut(rest, "=")
		if !ok || !strings.HasPrefix(after, `"`) {
			return Series{}, errors.New(`want label="value"`)
		}
		s.Labels = append(s.Labels, strings.TrimSpace(name))
		i := 1
		for i < len(after) && after[i] != '"' {
			if after[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(after) {
			return Series{}, errors.New("unterminated label value")
		}
		rest = after[i+1:]
	}
}

// undocumentedFamily reports whether a series belongs to what the reference
// names as a family, without a table: the OTel exporter's target_info and
// the Go runtime, process and promhttp collectors.
func undocumentedFamily(name string) bool {
	return name == "target_info" || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_")
}

// histogramSuffixes are the series a documented histogram is served as.
var histogramSuffixes = []string{"_bucket", "_sum", "_count"}

// SeriesProblems holds series scraped from service to the reference and
// returns each disagreement once, sorted: a metric the service's section
// does not document, a documented label a series lacks, a label on a
// series the row does not list. Label names only; the OTel exporter's
// otel_scope_* labels, a histogram bucket's le, and the families of
// undocumentedFamily are not the reference's to list.
func (d *MetricsDoc) SeriesProblems(service string, series []Series) ([]string, error) {
	docs, err := d.Metrics(service)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, s := range series {
		if undocumentedFamily(s.Name) {
			continue
		}
		m, ok := docs[s.Name]
		bucket := false
		if !ok {
			for _, suf := range histogramSuffixes {
				if base, cut := strings.CutSuffix(s.Name, suf); cut && docs[base].Type == "histogram" {
					m, ok, bucket = docs[base], true, suf == "_bucket"
				}
			}
		}
		if !ok {
			add(fmt.Sprintf("%s: exported, but not documented in the **%s** section", s.Name, service))
			continue
		}
		for _, l := range m.Labels {
			if !slices.Contains(s.Labels, l) {
				add(fmt.Sprintf("%s: documented label %q missing from a series (labels %q)", s.Name, l, s.Labels))
			}
		}
		for _, l := range s.Labels {
			if strings.HasPrefix(l, "otel_scope_") || (bucket && l == "le") || slices.Contains(m.Labels, l) {
				continue
			}
			add(fmt.Sprintf("%s: label %q on a series is not documented (documented %q)", s.Name, l, m.Labels))
		}
	}
	slices.Sort(out)
	return out, nil
}
