package data

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// bxCountry turns a BookCrossing location ("city, state, country") into the
// country the prompts show, with the ReLLa authors' clean-ups: the last ", "
// part, trimmed and title-cased as Python's str.title() does, "!" removed,
// usa/us/u s/u s a -> USA, uk/u k -> UK, leading and trailing "," and "."
// removed, anything containing "U.S" (except "U.S. Virgin Islands") -> USA,
// a list of accented or mis-decoded region names -> their country, and
// anything empty, of one character, or containing "N/A", "&#", "?", "@" or
// "*" -> "unknown".
func bxCountry(loc string) string {
	parts := strings.Split(loc, ", ")
	x := pyStrip(parts[len(parts)-1])
	x = pyStrip(strings.ReplaceAll(pyTitle(x), "!", ""))
	if l := strings.ToLower(x); l == "usa" || l == "us" || l == "u s" || l == "u s a" {
		x = "USA"
	}
	if l := strings.ToLower(x); l == "uk" || l == "u k" {
		x = "UK"
	}
	x = strings.TrimRight(x, ",.")
	x = strings.TrimLeft(x, ",.")
	if strings.Contains(strings.ToUpper(x), "U.S") && x != "U.S. Virgin Islands" {
		x = "USA"
	}
	if r, ok := bxRegions[x]; ok {
		x = r
	}
	if strings.Contains(strings.ToLower(x), "spain") {
		x = "Spain"
	}
	if strings.Contains(x, "Brasil") {
		x = "Brazil"
	}
	if strings.Contains(x, "Greece") {
		x = "Greece"
	}
	if x != "China" && (strings.Contains(strings.ToLower(x), "china") || x == "La Chine Éternelle" || x == "La Chine Ï¿½Ternelle") {
		x = "China"
	}
	if x == "Ï¿½Ï¿½Ï¿½" {
		x = "China"
	}
	switch x {
	case "Öð¹Ú", "ºþäï", "We`Re Global", "Ï¿½Ï¿½Ï¿½Ï¿½", "Iï¿½El":
		x = ""
	}
	if x == "" || utf8.RuneCountInString(x) == 1 || strings.Contains(x, "N/A") || strings.Contains(x, "&#") ||
		strings.Contains(x, "?") || strings.Contains(x, "@") || strings.Contains(x, "*") {
		x = "unknown"
	}
	return x
}

// bxRegions maps the region names (as pyTitle leaves them, some decoded
// from UTF-8 bytes read as cp1252) that the authors map to a country.
//
// The authors' checks run one after another, so their order matters only
// where one check's result feeds another: "Brasil", "Greece", "spain" and
// "china" are substring tests applied after this table, as in their code.
// No name in the table contains those words, and no result of the table
// (a country) matches a later unknown-test, so one lookup is equivalent.
var bxRegions = func() map[string]string {
	m := make(map[string]string)
	add := func(country string, names ...string) {
		for _, n := range names {
			m[n] = country
		}
	}
	add("USA", "San José", "San Josï¿½")
	add("Spain", "España", "Castilla-León", "Espaã±A", "Cataluña", "Mérida", "Álava", "Málaga", "A Coruña", "Barcelonès", "Berguedà",
		"Espaï¿½A", "Castilla-Leï¿½N", "A Coruï¿½A", "Cataluï¿½A", "Barcelonï¿½S", "Ï¿½Lava", "Mï¿½Rida", "Berguedï¿½", "Mï¿½Laga")
	add("Italy", "L`Italia")
	add("German", "Baden-Württemberg", "Bademn Würtemberg", "Baden-Wï¿½Rttemberg", "Bademn Wï¿½Rtemberg") // sic: the authors' "German"
	add("Ivory Coast", "Cote D`Ivoire", "Côte D", "Cï¿½Te D")
	add("Austria", "Oberösterreich", "Oberï¿½Sterreich")
	add("Mexico", "México", "Mï¿½Xico")
	add("Turkey", "Türkiye", "Içel", "Tï¿½Rkiye")
	add("Algeria", "L`Algérie", "Algérie", "Kärnten", "Kï¿½Rnten", "L`Algï¿½Rie", "Algï¿½Rie")
	add("France", "Rhône-Alpes", "Rhône Alpes", "Rhï¿½Ne-Alpes", "Rhï¿½Ne Alpes")
	add("Portugal", "Santarém", "Santarï¿½M")
	add("Finland", "Länsi-Suomen Lääni", "Lï¿½Nsi-Suomen Lï¿½Ï¿½Ni")
	add("Sweden", "V.Götaland", "Nyhamnsläge", "V.Gï¿½Taland", "Nyhamnslï¿½Ge")
	add("Mozambique", "Moçambique", "Moï¿½Ambique")
	add("Chile", "Ix Región", "Ix Regiï¿½N")
	add("Poland", "Maï¿½Opolskie", "Ma³Opolskie")
	add("Peru", "Perï¿½", "Perãº")
	return m
}()

// pyTitle is Python's str.title(): a cased character that follows a cased
// character is lower-cased, any other is title-cased.
func pyTitle(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	prevCased := false
	for _, r := range s {
		switch {
		case prevCased:
			b.WriteRune(unicode.ToLower(r))
		case r == 'ß':
			b.WriteString("Ss") // the one full title-case mapping likely here
		default:
			b.WriteRune(unicode.ToTitle(r))
		}
		prevCased = isCased(r)
	}
	return b.String()
}

// isCased is Unicode's Cased property, which Python's title() consults.
func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}
