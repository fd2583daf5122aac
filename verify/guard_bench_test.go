package verify

import (
	"fmt"
	"testing"
)

// BenchmarkGuardWrite is the cost of one response write through the guard, with the
// revocation lookup the gateway installs (a set of 10,000 other revocations), against the
// same write straight to the inner writer. reverse_proxy writes 32 KiB at a time.
func BenchmarkGuardWrite(b *testing.B) {
	check := revocationCheck(b)
	for _, size := range []int{512, 4096, 32 << 10} {
		chunk := payload(size)
		b.Run(fmt.Sprintf("unguarded/%d", size), func(b *testing.B) {
			rec := newRecorder(false)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = rec.Write(chunk)
			}
		})
		b.Run(fmt.Sprintf("guarded/%d", size), func(b *testing.B) {
			rec := newRecorder(false)
			p := newProbe(rec, DefaultCheckBytes, check)
			p.g.check = check
			p.g.WriteHeader(200)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.g.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
