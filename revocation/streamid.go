package revocation

import (
	"cmp"
	"errors"
	"strconv"
	"strings"
	"time"
)

// streamID is a Redis stream entry id, "<unix ms>-<sequence>".
type streamID struct {
	ms, seq uint64
}

func parseStreamID(s string) (streamID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, errors.New("stream id without '-'")
	}
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return streamID{}, errors.New("stream id with a bad time part")
	}
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if err != nil {
		return streamID{}, errors.New("stream id with a bad sequence part")
	}
	return streamID{ms: ms, seq: seq}, nil
}

// idAt is the smallest id at or after t; ids before the Unix epoch clamp to 0-0.
func idAt(t time.Time) streamID {
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return streamID{ms: uint64(ms)}
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id streamID) compare(o streamID) int {
	if c := cmp.Compare(id.ms, o.ms); c != 0 {
		return c
	}
	return cmp.Compare(id.seq, o.seq)
}

func (id streamID) time() time.Time {
	return time.UnixMilli(int64(id.ms))
}
