package policy

import (
	"encoding/json"
	"testing"
)

// FuzzRemoteDecision feeds arbitrary policy-server answers to the decision parser
// and checks the allow rule against an independent reading of the same bytes: an
// allow needs a single JSON object whose result has "decision":"allow" and
// "evaluation_status":"complete", and any scopes handed out are strings from it.
func FuzzRemoteDecision(f *testing.F) {
	for _, seed := range []string{
		`{"result": {"decision": "allow", "evaluation_status": "complete"}}`,
		`{"result": {"decision": "allow", "evaluation_status": "complete", "scopes": ["a", "b"], "reasons": ["r"]}}`,
		`{"result": {"decision": "allow", "evaluation_status": "partial"}}`,
		`{"result": {"decision": "allow", "evaluation_status": "complete", "scopes": "a"}}`,
		`{"result": {"decision": "deny", "evaluation_status": "complete", "reasons": ["no"]}}`,
		`{"result": ["allow"]}`,
		`{}`,
		`{"decision_id": "x"}`,
		`null`,
		// Duplicate keys: the parser and encoding/json must agree on which one counts.
		`{"result": {"decision": "deny", "evaluation_status": "complete", "decision": "allow"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d := decideRemote(raw)
		if !d.Allow {
			if d.Reason == "" {
				t.Fatalf("deny without a reason for %q", raw)
			}
			return
		}
		var envelope struct {
			Result struct {
				Decision string   `json:"decision"`
				Status   string   `json:"evaluation_status"`
				Scopes   []string `json:"scopes"`
			} `json:"result"`
		}
		if err := json.Unmarshal(raw, &envelope); err != nil {
			t.Fatalf("allowed an answer encoding/json rejects (%v): %q", err, raw)
		}
		if envelope.Result.Decision != "allow" || envelope.Result.Status != "complete" {
			t.Fatalf("allowed %q", raw)
		}
		if d.Reason != "" {
			t.Fatalf("allow with deny reason %q", d.Reason)
		}
		if d.HasScopes && len(d.Scopes) != len(envelope.Result.Scopes) {
			t.Fatalf("scopes %v, answer has %v", d.Scopes, envelope.Result.Scopes)
		}
	})
}
