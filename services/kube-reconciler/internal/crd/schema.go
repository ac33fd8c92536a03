package crd

import (
	"fmt"
	"regexp"
	"slices"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Schema is the structural schema of one served version of a CRD. It is
// immutable and safe for concurrent use.
type Schema struct {
	// ResourceVersion of the CRD the schema was read from.
	ResourceVersion string
	structural      *structuralschema.Structural
}

// FromCRD returns the structural schema of version in c. It returns
// ErrVersionNotServed when c does not serve version and ErrNoSchema (wrapped)
// when that version has no schema or one that is not structural. It does not
// change c (a lister's cached object).
func FromCRD(c *apiextensionsv1.CustomResourceDefinition, version string) (*Schema, error) {
	i := slices.IndexFunc(c.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool {
		return v.Name == version && v.Served
	})
	if i < 0 {
		return nil, ErrVersionNotServed
	}
	v := c.Spec.Versions[i]
	if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
		return nil, ErrNoSchema
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		return nil, fmt.Errorf("convert schema: %w: %w", err, ErrNoSchema)
	}
	s, err := structuralschema.NewStructural(&internal)
	if err != nil {
		return nil, fmt.Errorf("structural schema: %w: %w", err, ErrNoSchema)
	}
	// The API server refuses non-structural v1 CRDs; checking again costs
	// little and keeps pruning well-defined whatever the input.
	if errs := structuralschema.ValidateStructural(field.NewPath("openAPIV3Schema"), s); len(errs) > 0 {
		return nil, fmt.Errorf("structural schema: %w: %w", errs.ToAggregate(), ErrNoSchema)
	}
	return &Schema{ResourceVersion: c.ResourceVersion, structural: s}, nil
}

// index matches a list index in a pruned path ("repos[3]").
var index = regexp.MustCompile(`\[[0-9]+\]`)

// Prune removes from obj, a whole object (apiVersion, kind, metadata, spec,
// ...) in unstructured form, every field the schema does not declare, as the
// API server prunes a create. It returns the dropped paths, sorted, without
// duplicates, with list indexes folded ("spec.repos[].name").
func (s *Schema) Prune(obj map[string]any) []string {
	paths := pruning.PruneWithOptions(obj, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for i, p := range paths {
		paths[i] = index.ReplaceAllString(p, "[]")
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}
