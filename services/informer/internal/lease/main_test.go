package lease

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.NATSServerLeaks()...) }
