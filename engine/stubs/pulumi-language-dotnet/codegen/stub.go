// Package codegen stands in, at build time only, for
// github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3/codegen, which the
// Go module proxy refuses. pulumi-terraform-bridge's tfgen (linked into the
// random provider) names these types; the provider never generates C# at run time.
package codegen

import (
	"errors"

	"github.com/hashicorp/hcl/v2"
	"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
)

type CSharpPackageInfo struct {
	PackageReferences            map[string]string `json:"packageReferences,omitempty"`
	Namespaces                   map[string]string `json:"namespaces,omitempty"`
	Compatibility                string            `json:"compatibility,omitempty"`
	DictionaryConstructors       bool              `json:"dictionaryConstructors,omitempty"`
	ProjectReferences            []string          `json:"projectReferences,omitempty"`
	RootNamespace                string            `json:"rootNamespace,omitempty"`
	LiftSingleValueMethodReturns bool              `json:"liftSingleValueMethodReturns,omitempty"`
	RespectSchemaVersion         bool              `json:"respectSchemaVersion,omitempty"`
}

type CSharpPropertyInfo struct {
	Name string `json:"name,omitempty"`
}

type CSharpResourceInfo struct {
	Name string `json:"name,omitempty"`
}

func GenerateProgram(program *pcl.Program) (map[string][]byte, hcl.Diagnostics, error) {
	return nil, nil, errors.New("C# code generation is not part of this build")
}
