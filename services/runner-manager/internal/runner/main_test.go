package runner

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// demoRunner is the path of the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	testenv.RunWithBinary(m, "../../cmd/demo-runner", &demoRunner)
}
