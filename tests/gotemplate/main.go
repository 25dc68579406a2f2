// Renders Go text/template requests the way one Ollama release renders a TEMPLATE in Messages
// mode (template/template.go, Template.Execute).
//
// One JSON request per input line: {"template": "...", "messages": [{"role","content"}],
// "system": "...", "funcs": ["json", ...], "tool_call_ids": true}; one JSON answer per output
// line: {"output": "..."} or {"error": "..."}. "funcs" names the release's template functions;
// "tool_call_ids" gives messages the ToolCallID field (and tool calls their ID), as api.Message
// has since 0.12.10.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"time"
)

type ToolCallFunction struct {
	Index     int
	Name      string
	Arguments map[string]any
}

type ToolCall struct {
	Function ToolCallFunction
}

type ToolCallWithID struct {
	ID       string
	Function ToolCallFunction
}

// Message is api.Message before 0.12.10.
type Message struct {
	Role      string
	Content   string
	Thinking  string
	Images    []string
	ToolCalls []ToolCall
	ToolName  string
}

// MessageWithID is api.Message from 0.12.10 (and template.templateMessage from 0.14.0).
type MessageWithID struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []ToolCallWithID
	ToolName   string
	ToolCallID string
}

// Tools prints as JSON, as api.Tools (and template.templateTools) do; nil prints "null".
type Tools []any

func (t Tools) String() string {
	b, _ := json.Marshal([]any(t))
	return string(b)
}

type inMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type request struct {
	Template    string      `json:"template"`
	Messages    []inMessage `json:"messages"`
	System      string      `json:"system"`
	Funcs       []string    `json:"funcs"`
	ToolCallIDs bool        `json:"tool_call_ids"`
}

type answer struct {
	Output *string `json:"output,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// Every function some Ollama release adds to templates; a request picks its release's set.
var allFuncs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" },
}

func render(req request) (string, error) {
	funcs := template.FuncMap{}
	for _, name := range req.Funcs {
		if f, ok := allFuncs[name]; ok {
			funcs[name] = f
		}
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		return "", err
	}
	var messages any
	if req.ToolCallIDs {
		ms := make([]*MessageWithID, len(req.Messages))
		for i, m := range req.Messages {
			ms[i] = &MessageWithID{Role: m.Role, Content: m.Content}
		}
		messages = ms
	} else {
		ms := make([]*Message, len(req.Messages))
		for i, m := range req.Messages {
			ms[i] = &Message{Role: m.Role, Content: m.Content}
		}
		messages = ms
	}
	var b strings.Builder
	// Messages mode passes no "Prompt" key: with missingkey=zero, {{ .Prompt }} prints <no value>.
	err = tmpl.Execute(&b, map[string]any{
		"System":     req.System,
		"Messages":   messages,
		"Tools":      Tools(nil),
		"Response":   "",
		"Think":      false,
		"ThinkLevel": "",
		"IsThinkSet": false,
	})
	return b.String(), err
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<28)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for in.Scan() {
		var req request
		var ans answer
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			ans.Error = "bad request: " + err.Error()
		} else if text, err := render(req); err != nil {
			ans.Error = err.Error()
		} else {
			ans.Output = &text
		}
		enc.Encode(ans)
		out.Flush()
	}
}
