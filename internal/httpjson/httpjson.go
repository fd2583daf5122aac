// Package httpjson writes the JSON answers of Caracal's HTTP APIs (the STS and the
// Coordinator), so that both encode, frame and mark them alike.
package httpjson

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// encodeFailure is the answer when a value cannot be encoded: an RFC 6749 section 5.2
// error body, which every Caracal client already reads.
const encodeFailure = `{"error":"server_error","error_description":"response could not be encoded"}`

// NoStore marks a response as never cacheable (RFC 6749 section 5.1): Cache-Control
// no-store, and Pragma no-cache for HTTP/1.0 caches.
func NoStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// Write answers status with v encoded as JSON and followed by a newline, as
// json.Encoder writes it, so that answers printed by curl end their line. It sets
// Content-Type and Content-Length; other headers are the caller's. A value that cannot
// be encoded is answered 500 with a server_error body instead.
func Write(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(encodeFailure)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
