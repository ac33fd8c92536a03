package runner

import (
	"fmt"
	"os"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// demoRunner is the path of the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, cleanup, err := testenv.BuildBinary("../../cmd/demo-runner")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	demoRunner = bin
	return m.Run()
}
