package overhead

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/mockupstream"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

// TestStackReceipts: with Receipts the bench's stack is the product as
// shipped: a response names its receipt, which is in the fsync'd ledger of
// the data directory by the time the client has it, and the worker keeps
// its records there too; receipts off, no receipt.
func TestStackReceipts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway, a worker and a mock upstream; skipped in -short")
	}
	up, err := mockupstream.Start(mockupstream.Config{Models: []string{Model}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	for _, on := range []bool{true, false} {
		dir := t.TempDir()
		st, err := StartStack(context.Background(), StackConfig{UpstreamURL: up.URL, Model: Model, Receipts: on, DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, stream := range []bool{false, true} {
			resp, b := stackChat(t, st, stream)
			if resp.StatusCode != 200 {
				t.Fatalf("receipts=%v stream=%v: %d %s", on, stream, resp.StatusCode, b)
			}
			if id := resp.Header.Get("X-Tollgate-Receipt"); (id != "") != on {
				t.Errorf("receipts=%v stream=%v: receipt header %q", on, stream, id)
			} else if id != "" {
				ids = append(ids, id)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := st.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		cancel()
		if !on {
			if _, err := os.Stat(filepath.Join(dir, "receipts.db")); err == nil {
				t.Error("a ledger was written with receipts off")
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "worker", "records.db")); err != nil {
			t.Errorf("the worker kept no durable records: %v", err)
		}
		store, err := ledger.OpenWAL(filepath.Join(dir, "receipts.db"), ledger.WALOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := store.Entries(context.Background(), ids)
		store.Close()
		if err != nil || len(got) != len(ids) {
			t.Fatalf("receipts %v in the ledger after reopening: %d, %v", ids, len(got), err)
		}
	}
}

// TestStackOutboundLink: with OutboundLink the worker has no listening
// port; the gateway reaches it only through the session the worker dialled
// (TLS, pinned certificate), for unary and streamed requests alike.
func TestStackOutboundLink(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway, a worker and a mock upstream; skipped in -short")
	}
	up, err := mockupstream.Start(mockupstream.Config{Models: []string{Model}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	st, err := StartStack(context.Background(), StackConfig{UpstreamURL: up.URL, Model: Model, OutboundLink: true, Receipts: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	if st.link == nil || st.link.server.Sessions() != 1 {
		t.Fatal("no worker session on the gateway's link")
	}
	if ws := st.Scheduler.Workers(); len(ws) != 1 || !strings.HasPrefix(ws[0].URL, "link://") {
		t.Fatalf("the scheduler's worker is not a link:// worker: %+v", ws)
	}
	for _, stream := range []bool{false, true} {
		resp, b := stackChat(t, st, stream)
		if resp.StatusCode != 200 || resp.Header.Get("X-Tollgate-Receipt") == "" {
			t.Fatalf("stream=%v over the outbound link: %d %s (receipt %q)", stream, resp.StatusCode, b, resp.Header.Get("X-Tollgate-Receipt"))
		}
	}
	// Cut the link: the worker's batches can no longer reach it.
	st.link.server.Close()
	req, _ := http.NewRequest("POST", st.URL+"/chat/completions", strings.NewReader(`{"model":"`+Model+`","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+st.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatal("a request was served with the worker link closed: the batches did not go over it")
	}
}

// stackChat sends one chat request (streamed or not) to the stack and
// returns the response, its body read.
func stackChat(t *testing.T, st *Stack, stream bool) (*http.Response, []byte) {
	t.Helper()
	body := `{"model":"` + Model + `","messages":[{"role":"user","content":"hi"}]` + map[bool]string{true: `,"stream":true`}[stream] + `}`
	req, _ := http.NewRequest("POST", st.URL+"/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+st.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}
