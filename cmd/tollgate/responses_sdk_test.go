package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// The openai-go SDK's Responses client against `tollgate dev` with the
// simulator: create, stream, continue, get and delete.
func TestOpenAIGoSDKResponses(t *testing.T) {
	d := startTestDev(t)
	c := sdkClient(d, sdkKey)
	ctx := context.Background()

	first, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model:           "sim-tiny",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Tell me a story.")},
		Instructions:    openai.String("Be brief."),
		MaxOutputTokens: openai.Int(24),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first.ID, "resp_") || first.OutputText() == "" || first.Usage.TotalTokens != first.Usage.InputTokens+first.Usage.OutputTokens ||
		first.Usage.OutputTokens == 0 || (first.Status != "completed" && first.Status != "incomplete") {
		t.Fatalf("response: %+v", first)
	}

	// Streamed, continuing the first.
	stream := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model:              "sim-tiny",
		Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("And then?")},
		PreviousResponseID: openai.String(first.ID),
		MaxOutputTokens:    openai.Int(24),
	})
	var types []string
	var text strings.Builder
	var final responses.Response
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed", "response.incomplete":
			final = ev.Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) < 8 || types[0] != "response.created" || types[1] != "response.in_progress" || final.ID == "" {
		t.Fatalf("events %v", types)
	}
	if final.OutputText() != text.String() || text.Len() == 0 {
		t.Errorf("final text %q, deltas %q", final.OutputText(), text.String())
	}
	if final.PreviousResponseID != first.ID {
		t.Errorf("previous_response_id = %q", final.PreviousResponseID)
	}

	got, err := c.Responses.Get(ctx, final.ID, responses.ResponseGetParams{})
	if err != nil {
		t.Fatal(err)
	}
	if got.OutputText() != final.OutputText() {
		t.Errorf("GET text %q, want %q", got.OutputText(), final.OutputText())
	}
	if err := c.Responses.Delete(ctx, final.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Responses.Get(ctx, final.ID, responses.ResponseGetParams{})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("GET after DELETE: %v, want 404", err)
	}
}
