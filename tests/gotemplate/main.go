// Renders Go text/template requests the way Ollama renders a TEMPLATE in Messages mode.
//
// One JSON request per input line: {"template": "...", "messages": [{"role","content"}],
// "system": "..."}; one JSON answer per output line: {"output": "..."} or {"error": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"time"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type request struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
	System   string    `json:"system"`
}

type answer struct {
	Output *string `json:"output,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// The functions Ollama adds to every template, so that templates using them parse here too.
var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":   func() string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func() string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
}

func render(req request) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = tmpl.Execute(&b, map[string]any{
		"System":   req.System,
		"Messages": req.Messages,
		"Prompt":   "",
		"Response": "",
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
