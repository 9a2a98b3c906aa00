//go:build !unix

package gateway

import "net"

// watchClient is a no-op where sockets cannot be peeked at: a client that
// goes away is then noticed only when a write to it fails.
func watchClient(net.Conn, func()) (stop func()) { return func() {} }
