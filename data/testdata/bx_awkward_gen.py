"""Writes the BookCrossing files in bx-awkward/ (run inside that folder):
multi-line quoted records, ';' inside quotes, backslash-escaped quotes, NULL
ages, cp1252 bytes (0x92, 0xE9, ...), HTML entities, CRLF, tabs, bad ISBNs,
duplicate ISBNs, implicit 0 ratings, unknown users and books. Then
python3 ../bx_reference.py . > ../bx-awkward.expected"""
users = (
 '"User-ID";"Location";"Age"\r\n'
 '"1";"nyc, new york, usa";NULL\r\n'
 '"2";"stockton, california, u s a";"18"\r\n'
 '"3";"somewhere,\r\n multi-line, espa\xf1a";"35"\r\n'
 '"4";"x; y, uk";"150"\r\n'
 '"5";"a, b, ?";"4"\r\n'
 '"6";"rio, brasil";"60"\r\n'
 '"7";"town, n/a";"17"\r\n'
 '"8";"city, &#20013;&#22269;";"25"\r\n'
 '"9";"x, l`italia";"29"\r\n'
 '"10";"bcn, barcelon\xe8s";"30"\r\n'
 '"11";"linz, ober\xf6sterreich";"44"\r\n'
 '"12";"x, san jos\xe9";"45"\r\n'
 '"13";"x, u.s.a.";"54"\r\n'
 '"14";"x, y";"55"\r\n'
 '"15";"the \\"big\\" apple, usa";"100"\r\n'
 '"16";"porto, v.n.gaia, portugal";"5"\r\n'
 '"17";"berlin, germany!!";"0"\r\n'
)
open('BX-Users.csv', 'wb').write(users.encode('latin-1'))
url = '"http://x/S.jpg";"http://x/M.jpg";"http://x/L.jpg"'
books = ['"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"']
def b(isbn, title, author, year, pub):
    books.append(f'"{isbn}";"{title}";"{author}";"{year}";"{pub}";' + url)
b("0000000001", "Title; with semicolon", "Author One", "2001", "Pub &amp; Co")
b("0000000002", "It\x92s cp1252", "Jos\xe9 Saramago", "0", "n/a")
b("00000-0003", "Bad ISBN", "A", "1999", "P")
b("0000000004", 'Book "quoted" inside', "N/A", "19999", "P4")
b("0000000005", "\tTab title", "\tTabbed Author\t", "2005", "P5")
b("000000000X", "Ends with X", "A6", "2006", "N/a")
b("0000000007", "Seven", "A7", "2007", "P7")
b("0000000008", "Eight", "A8", "2008", "P8")
b("0000000001", "Duplicate of one", "Dup", "2000", "Dup")
open('BX-Books.csv','wb').write(('\r\n'.join(books) + '\r\n').encode('latin-1'))
r = ['"User-ID";"ISBN";"Book-Rating"']
def rt(u, isbn, x): r.append(f'"{u}";"{isbn}";"{x}"')
for isbn, x in [("0000000001", 0), ("0000000002", 8), ("0000000004", 5), ("000000000X", 4), ("0000000005", 0), ("0000000007", 10), ("0000000008", 3)]:
    rt(3, isbn, x)
rt(999, "0000000001", 7)          # unknown user
rt(3, "0000009999", 7)            # unknown ISBN
rt(1, "00000-0003", 9)            # book dropped for its ISBN
for isbn, x in [("0000000008", 9), ("0000000007", 0), ("0000000001", 6), ("0000000002", 0), ("0000000005", 5), ("000000000X", 1)]:
    rt(1, isbn, x)
for isbn, x in [("0000000001", 5), ("0000000002", 6), ("0000000004", 7), ("0000000005", 8), ("0000000007", 9)]:
    rt(4, isbn, x)
for isbn, x in [("0000000008", 2), ("0000000007", 7), ("0000000001", 0), ("0000000002", 9), ("0000000005", 0), ("000000000X", 10), ("0000000004", 5), ("0000000001", 1)]:
    rt(16, isbn, x)
open('BX-Book-Ratings.csv','wb').write(('\r\n'.join(r) + '\r\n').encode('latin-1'))
