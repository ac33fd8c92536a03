package testenv_test

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestMetricSum(t *testing.T) {
	t.Parallel()
	body := `# HELP x_total things
# TYPE x_total counter
x_total{otel_scope_name="svc",reason="a",resource="r"} 2
x_total{otel_scope_name="svc",reason="ab",resource="r"} 3
x_total_other{reason="a"} 100
y 7
`
	cases := []struct {
		name    string
		filters []string
		want    float64
		found   bool
	}{
		{"x_total", nil, 5, true},
		{"x_total", []string{`reason="a"`}, 2, true},
		{"x_total", []string{`reason="a"`, `resource="r"`}, 2, true},
		{"x_total", []string{`reason="b"`}, 0, false},
		{"y", nil, 7, true},
		{"z", nil, 0, false},
	}
	for _, c := range cases {
		got, found := testenv.MetricSum(body, c.name, c.filters...)
		if got != c.want || found != c.found {
			t.Errorf("MetricSum(%s, %v) = %v, %v; want %v, %v", c.name, c.filters, got, found, c.want, c.found)
		}
	}
}
