// Package repo embeds files of the repository root that the binary ships: the documented sample
// configuration.
package repo

import _ "embed"

// SampleConfig is config.yaml: every option with its default and a line on what it does.
//
//go:embed config.yaml
var SampleConfig []byte
