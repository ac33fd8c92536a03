package testenv

import (
	"strconv"
	"strings"
)

// MetricSum returns the sum of the samples named name in a Prometheus text
// exposition whose labels contain every filter (each a `key="value"`
// pair), and whether any sample matched. Labels it is not told about (the
// OTel exporter adds otel_scope_*) do not matter.
func MetricSum(body, name string, filters ...string) (float64, bool) {
	var total float64
	found := false
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || line[:end] != name {
			continue
		}
		labels := ""
		if line[end] == '{' {
			closing := strings.LastIndexByte(line, '}')
			if closing < end {
				continue
			}
			labels = line[end+1 : closing]
		}
		matches := true
		for _, f := range filters {
			matches = matches && hasLabel(labels, f)
		}
		if !matches {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		total += v
		found = true
	}
	return total, found
}

// hasLabel reports whether the comma-separated labels hold pair exactly.
func hasLabel(labels, pair string) bool {
	for l := range strings.SplitSeq(labels, ",") {
		if strings.TrimSpace(l) == pair {
			return true
		}
	}
	return false
}
