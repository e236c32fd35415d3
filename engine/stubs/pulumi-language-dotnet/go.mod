module github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3

go 1.25.0

require (
	github.com/hashicorp/hcl/v2 v2.24.0
	github.com/pulumi/pulumi/pkg/v3 v3.245.0
)
