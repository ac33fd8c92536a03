package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEveryVariableIsDocumented fails when main.go reads an environment
// variable (envOr, os.Getenv, os.LookupEnv with a literal name) that
// docs/configuration.md does not list under "## memapi (in-memory API)".
func TestEveryVariableIsDocumented(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 || !readsEnv(call.Fun) {
			return true
		}
		if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if name, err := strconv.Unquote(lit.Value); err == nil {
				names = append(names, name)
			}
		}
		return true
	})
	testenv.RequireDocumented(t, "../../../docs/configuration.md", "## memapi (in-memory API)", func(lookup envconfig.LookupFunc) {
		for _, name := range names {
			lookup(name)
		}
	})
}

// readsEnv reports whether fun is envOr, os.Getenv or os.LookupEnv.
func readsEnv(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == "envOr"
	case *ast.SelectorExpr:
		pkg, ok := f.X.(*ast.Ident)
		return ok && pkg.Name == "os" && (f.Sel.Name == "Getenv" || f.Sel.Name == "LookupEnv")
	}
	return false
}
