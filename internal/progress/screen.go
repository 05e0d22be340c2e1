package progress

import "fmt"

// Screen replays output written to a terminal by a Reporter (printable
// text, \r, \n and ESC [ K, erase to the end of the line) and returns the
// rows a person would see, for tests. Any other control sequence is an error.
func Screen(out string) ([]string, error) {
	rows := [][]rune{nil}
	col := 0
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		row := &rows[len(rows)-1]
		switch c := rs[i]; c {
		case '\r':
			col = 0
		case '\n':
			rows = append(rows, nil)
			col = 0
		case 0x1b:
			if i+2 >= len(rs) || rs[i+1] != '[' || rs[i+2] != 'K' {
				return nil, fmt.Errorf("unexpected escape sequence at rune %d: %q", i, string(rs[i:min(i+6, len(rs))]))
			}
			*row = (*row)[:min(col, len(*row))]
			i += 2
		default:
			for len(*row) <= col {
				*row = append(*row, ' ')
			}
			(*row)[col] = c
			col++
		}
	}
	var s []string
	for _, r := range rows {
		s = append(s, string(r))
	}
	if s[len(s)-1] == "" {
		s = s[:len(s)-1]
	}
	return s, nil
}
