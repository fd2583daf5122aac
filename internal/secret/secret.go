// Package secret generates application client secrets and stores them only as Argon2id hashes in
// PHC string form. Checking a secret costs 64 MiB and a few hundred milliseconds by design, so the
// Verifier bounds how many checks run at once and remembers recent successes.
package secret

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters of new hashes (RFC 9106 second recommended option, with p=4).
const (
	hashMemory  = 64 * 1024 // KiB
	hashTime    = 3
	hashThreads = 4
	saltSize    = 16
	keySize     = 32
)

// Bounds on stored hashes: a PHC string is data, and an absurd cost in it must not become a memory
// or CPU exhaustion.
const (
	maxMemory  = 256 * 1024 // KiB, 256 MiB
	maxTime    = 10
	maxThreads = 16
	minSalt    = 8
	maxSalt    = 64
	minKey     = 16
	maxKey     = 64
	maxPHC     = 256
)

// phcB64 is the PHC string encoding: standard alphabet without padding, one spelling per value.
var phcB64 = base64.RawStdEncoding.Strict()

// Generate returns a new client secret: 32 random bytes, base64url without padding.
func Generate() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Hash returns the Argon2id PHC string of a secret:
// $argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash> with a random 16-byte salt and a 32-byte hash.
func Hash(secret string) (string, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hashing secret: generating salt: %w", err)
	}
	p := params{memory: hashMemory, time: hashTime, threads: hashThreads}
	return p.encode(salt, argon2.IDKey([]byte(secret), salt, p.time, p.memory, p.threads, keySize)), nil
}

// Check reports whether secret matches the PHC string. A PHC string that is not Argon2id version
// 19 within the bounds above is an error, not a mismatch.
func Check(phc, secret string) (bool, error) {
	p, salt, want, err := parse(phc)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(secret), salt, p.time, p.memory, p.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

type params struct {
	memory  uint32
	time    uint32
	threads uint8
}

func (p params) encode(salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, phcB64.EncodeToString(salt), phcB64.EncodeToString(key))
}

// parse reads $argon2id$v=19$m=M,t=T,p=P$salt$hash strictly: fields in that order, nothing else.
func parse(phc string) (params, []byte, []byte, error) {
	var p params
	if len(phc) > maxPHC {
		return p, nil, nil, errors.New("parsing secret hash: too long")
	}
	fields := strings.Split(phc, "$")
	if len(fields) != 6 || fields[0] != "" || fields[1] != "argon2id" {
		return p, nil, nil, errors.New("parsing secret hash: not an argon2id phc string")
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errors.New("parsing secret hash: unsupported argon2 version")
	}
	settings := strings.Split(fields[3], ",")
	if len(settings) != 3 {
		return p, nil, nil, errors.New("parsing secret hash: want exactly m, t and p")
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(settings[i], name+"=")
		if !ok {
			return p, nil, nil, fmt.Errorf("parsing secret hash: parameter %d is not %s", i+1, name)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("parsing secret hash: parameter %s is not a number", name)
		}
		vals[i] = n
	}
	m, t, threads := vals[0], vals[1], vals[2]
	switch {
	case threads < 1 || threads > maxThreads:
		return p, nil, nil, fmt.Errorf("parsing secret hash: p=%d outside 1..%d", threads, maxThreads)
	case t < 1 || t > maxTime:
		return p, nil, nil, fmt.Errorf("parsing secret hash: t=%d outside 1..%d", t, maxTime)
	case m < 8*threads || m > maxMemory:
		return p, nil, nil, fmt.Errorf("parsing secret hash: m=%d outside %d..%d", m, 8*threads, maxMemory)
	}
	p = params{memory: uint32(m), time: uint32(t), threads: uint8(threads)}
	salt, err := phcB64.DecodeString(fields[4])
	if err != nil || len(salt) < minSalt || len(salt) > maxSalt {
		return p, nil, nil, fmt.Errorf("parsing secret hash: salt must be %d..%d bytes of unpadded base64", minSalt, maxSalt)
	}
	key, err := phcB64.DecodeString(fields[5])
	if err != nil || len(key) < minKey || len(key) > maxKey {
		return p, nil, nil, fmt.Errorf("parsing secret hash: hash must be %d..%d bytes of unpadded base64", minKey, maxKey)
	}
	return p, salt, key, nil
}
