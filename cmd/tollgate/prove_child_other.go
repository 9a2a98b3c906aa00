//go:build !unix

package main

import "os"

// protocolStdout is standard output where descriptors cannot be moved.
func protocolStdout() (*os.File, error) { return os.Stdout, nil }
