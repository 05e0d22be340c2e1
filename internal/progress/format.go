package progress

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Fixed formats v with d decimals ("0.6931"); NaN and ±Inf read "n/a".
func Fixed(v float64, d int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

// Sci formats v in scientific notation with 2 decimals ("2.00e-04").
func Sci(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'e', 2, 64)
}

// Sig formats v with 4 significant digits ("1.234", "1234", "1.234e+05").
func Sig(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// Count formats a large count for people: 950, 19.9k, 1.2M.
func Count(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case a >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// Rate formats units per second ("12.3 steps/s"), or seconds per unit
// when below one ("4.2 s/step").
func Rate(perSec float64, unit string) string {
	if perSec >= 1 || perSec <= 0 {
		return fmt.Sprintf("%.3g %s/s", perSec, unit)
	}
	u := unit
	if len(u) > 1 && u[len(u)-1] == 's' {
		u = u[:len(u)-1]
	}
	return fmt.Sprintf("%.3g s/%s", 1/perSec, u)
}

// Duration rounds d for people: 850ms, 39s, 3m05s, 1h02m.
func Duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
