package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// maxBodyFile bounds a request or response body read by verify.
const maxBodyFile = 256 << 20

// verifyDigests is `tollgate verify --request FILE --response FILE
// RECEIPT`: it recomputes the receipt's request digest from the client's
// own OpenAI request body (the canonical task the gateway built from it,
// gateway.RequestTask, with the receipt's request ID and subject) and its
// response digest from the response body the client received — JSON, or
// the raw SSE stream — and says whether each matches. Either file may be
// omitted. The receipt's proof is verified separately (without these
// flags, or with -gateway / -registry-root as well).
func verifyDigests(w io.Writer, requestFile, responseFile string, receiptFiles []string) error {
	var all []json.RawMessage
	for _, name := range receiptFiles {
		if err := eachReceipt(name, func(raw json.RawMessage) { all = append(all, raw) }); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(all) != 1 {
		return fmt.Errorf("--request/--response check one receipt, got %d", len(all))
	}
	// Strictly, as every verifier reads a receipt: a lenient reading
	// (case-insensitive keys, the last duplicate winning) could check
	// digests the receipt's other readers do not see.
	r, err := receipts.ParseReceipt(all[0])
	if err != nil {
		return err
	}
	failed := 0
	report := func(what, got, want string) {
		if got == want {
			fmt.Fprintf(w, "%s %s: %s digest %s OK\n", printable(r.ID), printable(r.RequestID), what, got)
			return
		}
		failed++
		fmt.Fprintf(w, "%s %s: %s digest MISMATCH: the body gives %s, the receipt says %s\n", printable(r.ID), printable(r.RequestID), what, got, want)
	}
	var tk *task.Task
	if requestFile != "" {
		body, err := readBodyFile(requestFile)
		if err != nil {
			return err
		}
		if tk, err = gateway.RequestTask(body, r.RequestID, r.Subject); err != nil {
			return fmt.Errorf("%s: %w", requestFile, err)
		}
		d := tk.Digest()
		report("request", hex.EncodeToString(d[:]), r.RequestDigest)
	}
	if responseFile != "" {
		body, err := readBodyFile(responseFile)
		if err != nil {
			return err
		}
		d, plainErr := responseDigest(body)
		// A task with tools or n > 1 is hashed in the rich layout
		// (docs/receipts.md). The request says which; without it, an
		// answer with tool calls or several choices is rich, and a text
		// answer may be either.
		out, ok, err := richOutput(body, tk)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", responseFile, err)
		case !ok && plainErr != nil:
			return fmt.Errorf("%s: %w", responseFile, plainErr)
		case ok && plainErr != nil && tk == nil:
			d = out.Digest() // only tool calls: no text to hash plainly
		case ok:
			rd := out.Digest()
			switch {
			case tk != nil && tk.RichOutput(), tk == nil && (len(out.Choices) > 1 || out.Choices[0].Calls != nil):
				d = rd
			case tk == nil && hex.EncodeToString(rd[:]) == r.ResponseDigest:
				d = rd
			}
		}
		report("response", hex.EncodeToString(d[:]), r.ResponseDigest)
	}
	if failed > 0 {
		return fmt.Errorf("%d digest(s) do not match receipt %s", failed, r.ID)
	}
	return nil
}

func readBodyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBodyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBodyFile {
		return nil, fmt.Errorf("%s: over %d bytes", name, maxBodyFile)
	}
	return b, nil
}

// responseDigest is task.ResponseDigest of what a gateway response body
// carries: a chat or text completion (choice 0's text), an embeddings list
// (its vectors in index order, float or base64), or an SSE stream of chunks
// (choice 0's text deltas concatenated).
func responseDigest(body []byte) ([32]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if bytes.HasPrefix(trimmed, []byte("data:")) || bytes.HasPrefix(trimmed, []byte(":")) {
		text, err := streamText(trimmed)
		if err != nil {
			return [32]byte{}, err
		}
		return task.ResponseDigest(text, nil), nil
	}
	var resp struct {
		Object  string `json:"object"`
		Choices []struct {
			Index   int     `json:"index"`
			Text    *string `json:"text"`
			Message *struct {
				Content *string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Data []struct {
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(trimmed, &resp); err != nil {
		return [32]byte{}, fmt.Errorf("not a JSON response or an SSE stream: %w", err)
	}
	if resp.Object == "list" {
		return embeddingsDigest(resp.Data)
	}
	for _, c := range resp.Choices {
		if c.Index != 0 {
			continue
		}
		switch {
		case c.Message != nil && c.Message.Content != nil:
			return task.ResponseDigest(*c.Message.Content, nil), nil
		case c.Text != nil:
			return task.ResponseDigest(*c.Text, nil), nil
		}
	}
	return [32]byte{}, errors.New("the response has no choice 0 with text")
}

func embeddingsDigest(data []struct {
	Index     int             `json:"index"`
	Embedding json.RawMessage `json:"embedding"`
}) ([32]byte, error) {
	sort.SliceStable(data, func(i, j int) bool { return data[i].Index < data[j].Index })
	vecs := make([][]float32, len(data))
	for i, d := range data {
		var b64 string
		if json.Unmarshal(d.Embedding, &b64) == nil {
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(raw)%4 != 0 {
				return [32]byte{}, fmt.Errorf("embedding %d: bad base64", d.Index)
			}
			vecs[i] = make([]float32, len(raw)/4)
			for j := range vecs[i] {
				vecs[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
			}
			continue
		}
		if err := json.Unmarshal(d.Embedding, &vecs[i]); err != nil {
			return [32]byte{}, fmt.Errorf("embedding %d: %w", d.Index, err)
		}
	}
	return task.ResponseDigest("", vecs), nil
}

// streamText concatenates choice 0's text of an SSE stream of chat or
// text-completion chunks, up to [DONE] (or the end); an error event
// ends it too (a stream that ended early: its receipt covers the text
// the worker generated, which may be more than the client received).
func streamText(body []byte) (string, error) {
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), maxBodyFile)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		data, ok := strings.CutPrefix(line, "data:")
		if !ok {
			continue
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			break
		}
		var chunk struct {
			Choices []struct {
				Index int     `json:"index"`
				Text  *string `json:"text"`
				Delta *struct {
					Content *string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return "", fmt.Errorf("stream chunk: %w", err)
		}
		if chunk.Error != nil {
			break
		}
		for _, c := range chunk.Choices {
			switch {
			case c.Index != 0:
			case c.Delta != nil && c.Delta.Content != nil:
				text.WriteString(*c.Delta.Content)
			case c.Text != nil:
				text.WriteString(*c.Text)
			}
		}
	}
	return text.String(), sc.Err()
}

// richOutput rebuilds a chat answer's choices and tool calls (JSON or an
// SSE stream) as task.Output; ok is false for other bodies. With tk, the
// output has the task's number of choices.
func richOutput(body []byte, tk *task.Task) (*task.Output, bool, error) {
	type call struct {
		Index    *int   `json:"index"`
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	type choice struct {
		Index   int `json:"index"`
		Message *struct {
			Content   *string `json:"content"`
			ToolCalls []call  `json:"tool_calls"`
		} `json:"message"`
		Delta *struct {
			Content   *string `json:"content"`
			ToolCalls []call  `json:"tool_calls"`
		} `json:"delta"`
	}
	type piece struct {
		choice int
		text   string
		calls  []task.ToolCallDelta
	}
	var pieces []piece
	n := 1
	add := func(c choice, content *string, calls []call, whole bool) {
		p := piece{choice: c.Index}
		if content != nil {
			p.text = *content
		}
		for i, tc := range calls {
			idx := i
			if tc.Index != nil && !whole {
				idx = *tc.Index
			}
			p.calls = append(p.calls, task.ToolCallDelta{Index: idx, ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		n = max(n, c.Index+1)
		pieces = append(pieces, p)
	}
	trimmed := bytes.TrimSpace(body)
	if bytes.HasPrefix(trimmed, []byte("data:")) || bytes.HasPrefix(trimmed, []byte(":")) {
		sc := bufio.NewScanner(bytes.NewReader(trimmed))
		sc.Buffer(make([]byte, 64<<10), maxBodyFile)
		for sc.Scan() {
			data, ok := strings.CutPrefix(strings.TrimRight(sc.Text(), "\r"), "data:")
			if data = strings.TrimSpace(data); !ok || data == "[DONE]" {
				continue
			}
			var chunk struct {
				Object  string   `json:"object"`
				Choices []choice `json:"choices"`
			}
			if json.Unmarshal([]byte(data), &chunk) != nil || chunk.Object != "chat.completion.chunk" {
				continue
			}
			for _, c := range chunk.Choices {
				if c.Delta != nil {
					add(c, c.Delta.Content, c.Delta.ToolCalls, false)
				}
			}
		}
	} else {
		var resp struct {
			Object  string   `json:"object"`
			Choices []choice `json:"choices"`
		}
		if json.Unmarshal(trimmed, &resp) != nil || resp.Object != "chat.completion" {
			return nil, false, nil
		}
		sort.SliceStable(resp.Choices, func(i, j int) bool { return resp.Choices[i].Index < resp.Choices[j].Index })
		for _, c := range resp.Choices {
			if c.Message != nil {
				add(c, c.Message.Content, c.Message.ToolCalls, true)
			}
		}
	}
	if tk != nil {
		n = tk.Choices()
	}
	if n > 64 {
		return nil, false, fmt.Errorf("%d choices", n)
	}
	out := task.NewOutput(n)
	for _, p := range pieces {
		if err := out.Add(p.choice, p.text, p.calls); err != nil {
			return nil, false, err
		}
	}
	return out, true, nil
}
