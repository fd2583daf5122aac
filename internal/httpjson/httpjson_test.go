package httpjson

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, http.StatusCreated, map[string]string{"id": "a"})
	body := rec.Body.String()
	if rec.Code != http.StatusCreated || body != "{\"id\":\"a\"}\n" {
		t.Fatalf("got %d %q", rec.Code, body)
	}
	h := rec.Header()
	if h.Get("Content-Type") != "application/json" || h.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("headers %v", h)
	}
	if h.Get("Cache-Control") != "" {
		t.Fatalf("Write set Cache-Control %q; that is NoStore's", h.Get("Cache-Control"))
	}
}

func TestWriteUnencodable(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, http.StatusOK, map[string]any{"f": func() {}})
	var e struct {
		Error string `json:"error"`
	}
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error != "server_error" {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
	if rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
		t.Fatalf("Content-Length %q for %d bytes", rec.Header().Get("Content-Length"), rec.Body.Len())
	}
}

func TestNoStore(t *testing.T) {
	h := http.Header{}
	NoStore(h)
	if h.Get("Cache-Control") != "no-store" || h.Get("Pragma") != "no-cache" || len(h) != 2 {
		t.Fatalf("headers %v", h)
	}
}
