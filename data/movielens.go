package data

import (
	"cmp"
	"slices"
)

// mlRating is one rating read from a MovieLens file, before ordering.
type mlRating struct {
	time   int64
	user   int32 // index into the users read (rank of its id while sorting)
	item   int32 // index into the items read (rank of its id while sorting)
	rating float32
	seq    int32 // position in the files, to keep the sort stable
}

// movieLens turns the MovieLens ratings into a Dataset (RELLA.md section 1):
// a stable sort by (timestamp, user id, item id), the ids compared as
// strings or numbers (Options.IDOrder),
// histories of the user's earlier ratings in that order, samples for the
// ratings with at least MinHistory earlier ones, and the global 8:1:1
// chronological split of the samples in that same order.
//
// users and items are all that the files hold; the Dataset keeps those that
// some rating names, in the files' order. label decides a rating's label.
func movieLens(kind Kind, users []User, items []Item, ratings []mlRating, opts Options, rep *Report, label func(float32) int8) *Dataset {
	// Sort on the ids' ranks (their order as strings), with the position in
	// the files as the last key: a stable sort by (time, user id, item id).
	numeric := opts.idOrder() == IDOrderNumeric
	userRank, userAt := idRanks(len(users), numeric, func(i int) string { return users[i].ID })
	itemRank, itemAt := idRanks(len(items), numeric, func(i int) string { return items[i].ID })
	for i := range ratings {
		r := &ratings[i]
		r.user, r.item, r.seq = userRank[r.user], itemRank[r.item], int32(i)
	}
	slices.SortFunc(ratings, func(a, b mlRating) int {
		if c := cmp.Compare(a.time, b.time); c != 0 {
			return c
		}
		if c := cmp.Compare(a.user, b.user); c != 0 {
			return c
		}
		if c := cmp.Compare(a.item, b.item); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for i := range ratings {
		r := &ratings[i]
		r.user, r.item = userAt[r.user], itemAt[r.item]
	}

	// Keep the users and items that some rating names, in the files' order.
	userCount := make([]int32, len(users))
	itemUsed := make([]bool, len(items))
	for _, r := range ratings {
		userCount[r.user]++
		itemUsed[r.item] = true
	}
	ds := &Dataset{Kind: kind}
	userNew := make([]int32, len(users))
	for i, n := range userCount {
		userNew[i] = -1
		if n > 0 {
			userNew[i] = int32(len(ds.Users))
			ds.Users = append(ds.Users, users[i])
		}
	}
	itemNew := make([]int32, len(items))
	for i, used := range itemUsed {
		itemNew[i] = -1
		if used {
			itemNew[i] = int32(len(ds.Items))
			ds.Items = append(ds.Items, items[i])
		}
	}

	// One backing array for all sequences.
	events := make([]Event, len(ratings))
	ds.Seqs = make([][]Event, len(ds.Users))
	off := 0
	for i, n := range userCount {
		if n > 0 {
			u := userNew[i]
			ds.Seqs[u] = events[off : off : off+int(n)]
			off += int(n)
		}
	}
	samples := make([]Sample, 0, max(0, len(ratings)-opts.MinHistory*len(ds.Users)))
	for _, r := range ratings {
		u := userNew[r.user]
		pos := len(ds.Seqs[u])
		ds.Seqs[u] = append(ds.Seqs[u], Event{Item: itemNew[r.item], Rating: r.rating, Time: r.time})
		if pos >= opts.MinHistory {
			samples = append(samples, Sample{User: u, Pos: int32(pos), Label: label(r.rating)})
		} else {
			rep.ShortHistory++
		}
	}
	n := len(samples)
	nTrain, nValid := n*8/10, n/10
	ds.Train = samples[:nTrain:nTrain]
	ds.Valid = samples[nTrain : nTrain+nValid : nTrain+nValid]
	ds.Test = samples[nTrain+nValid:]

	rep.RatingsKept = len(ratings)
	rep.Samples = n
	return ds
}

// idRanks returns each id's rank in the order of the ids as strings or, when
// numeric, as numbers (the readers have checked that they are decimal
// numbers), and the index at each rank.
func idRanks(n int, numeric bool, id func(int) string) (rank, at []int32) {
	at = make([]int32, n)
	for i := range at {
		at[i] = int32(i)
	}
	compare := func(a, b int32) int { return cmp.Compare(id(int(a)), id(int(b))) }
	if numeric {
		val := make([]uint64, n)
		for i := range val {
			val[i], _ = parseUint([]byte(id(i)))
		}
		compare = func(a, b int32) int {
			if c := cmp.Compare(val[a], val[b]); c != 0 {
				return c
			}
			return cmp.Compare(id(int(a)), id(int(b)))
		}
	}
	slices.SortStableFunc(at, compare)
	rank = make([]int32, n)
	for r, i := range at {
		rank[i] = int32(r)
	}
	return rank, at
}
