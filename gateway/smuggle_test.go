package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/httpguard/guardtest"
)

// rawExchange writes stream on a fresh connection to addr and reads every
// response until the server closes the connection (or 3 s pass). closed
// reports whether the server closed it.
func rawExchange(t *testing.T, addr, stream string) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	return rawExchangeFor(t, addr, stream, 3*time.Second)
}

func rawExchangeFor(t *testing.T, addr, stream string, wait time.Duration) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, stream); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return resps, bodies, !(asNetErr(err, &ne) && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resps, bodies = append(resps, resp), append(bodies, string(b))
	}
}

func asNetErr(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

// The attack: a front proxy framing by Content-Length (or by the first of
// two framing headers, or by unfolded lines) forwards one request; the
// gateway must not see two. Each case must get one 400, in OpenAI form,
// and the connection closed, with the smuggled GET never answered.
func TestRequestSmuggling(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.ln.Addr().String()
	for _, tc := range guardtest.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			resps, bodies, closed := rawExchange(t, addr, tc.Stream)
			for i, b := range bodies {
				if strings.Contains(b, "/smuggled") {
					t.Errorf("smuggled request answered (response %d of %d: %d %s)", i+1, len(resps), resps[i].StatusCode, b)
				}
			}
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want 1", len(resps))
			}
			if resps[0].StatusCode != tc.Status {
				t.Errorf("status %d, want %d (%s)", resps[0].StatusCode, tc.Status, bodies[0])
			}
			if !strings.Contains(bodies[0], `"error"`) {
				t.Errorf("body not in OpenAI form: %s", bodies[0])
			}
			if !closed {
				t.Error("connection left open")
			}
		})
	}
}

// Well-formed pipelined requests (Content-Length, chunked with an
// extension and a trailer, a leading blank line, tabs and obs-text in
// values) all pass through and are answered in order on one connection.
func TestPipelinedRequestsStillServed(t *testing.T) {
	h := newHarness(t, nil)
	stream := strings.Join(guardtest.Pipelined, "") + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	resps, bodies, _ := rawExchange(t, h.ln.Addr().String(), stream)
	if len(resps) != len(guardtest.Pipelined)+1 {
		t.Fatalf("got %d responses, want %d: %q", len(resps), len(guardtest.Pipelined)+1, bodies)
	}
	for i, r := range resps {
		if r.StatusCode != 200 {
			t.Errorf("response %d: %d %s", i, r.StatusCode, bodies[i])
		}
	}
}
