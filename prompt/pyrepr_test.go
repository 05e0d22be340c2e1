package prompt

import "testing"

// TestPyRepr compares PyRepr with Python 3.11's repr() of the same lists
// (constants printed by python3 -c 'print(repr([...]))' on the dev box).
func TestPyRepr(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{}, "[]"},
		{[]string{""}, "['']"},
		{[]string{"Toy Story (1995)"}, "['Toy Story (1995)']"},
		{[]string{"Ulee's Gold (1997)", "Say \"hi\""}, "[\"Ulee's Gold (1997)\", 'Say \"hi\"']"},
		{[]string{"both ' and \" quotes", "only '", "only \"", "'", "\"", "''\"\""}, "['both \\' and \" quotes', \"only '\", 'only \"', \"'\", '\"', '\\'\\'\"\"']"},
		{[]string{"back\\slash", "\\'", "\\\""}, "['back\\\\slash', \"\\\\'\", '\\\\\"']"},
		{[]string{"caf\u00e9", "Cold Fever (\u00c1 k\u00f6ldum klaka) (1994)", "na\u00efve \u00e6\u00f8\u00e5"}, "['caf\u00e9', 'Cold Fever (\u00c1 k\u00f6ldum klaka) (1994)', 'na\u00efve \u00e6\u00f8\u00e5']"},
		{[]string{"tab\u0009here", "nl\u000ax", "cr\u000dx", "\u0000\u0001\u001f\u007f"}, "['tab\\there', 'nl\\nx', 'cr\\rx', '\\x00\\x01\\x1f\\x7f']"},
		{[]string{"\u00a0nbsp", "\u00adsoft", "\u0085nel", "\u2028ls", "\u200bzw", "\u3000ideo", "\ue000pua", "\u0378unassigned", "\U000e0001tag", "\ufeffbom"}, "['\\xa0nbsp', '\\xadsoft', '\\x85nel', '\\u2028ls', '\\u200bzw', '\\u3000ideo', '\\ue000pua', '\\u0378unassigned', '\\U000e0001tag', '\\ufeffbom']"},
		{[]string{"emoji \U0001f600", "\u4e2d\u6587", "\u0928\u092e\u0938\u094d\u0924\u0947", "\U0001d11e music", "\u00ff\u0100"}, "['emoji \U0001f600', '\u4e2d\u6587', '\u0928\u092e\u0938\u094d\u0924\u0947', '\U0001d11e music', '\u00ff\u0100']"},
		{[]string{"mixed ' \\ \u000a \u00a0 \u00e9 \"", "x'\u00a0"}, "['mixed \\' \\\\ \\n \\xa0 \u00e9 \"', \"x'\\xa0\"]"},
	}
	for _, c := range cases {
		if got := PyRepr(c.in); got != c.want {
			t.Errorf("PyRepr(%q)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

// TestPyReprInvalidUTF8 checks the documented choice for bytes no Python
// str can hold: they are written as U+FFFD.
func TestPyReprInvalidUTF8(t *testing.T) {
	if got, want := PyRepr([]string{"a\xffb"}), "['a\uFFFDb']"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
