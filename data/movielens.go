package data

import (
	"cmp"
	"slices"
)

// mlRating is one rating read from a MovieLens file, before ordering.
type mlRating struct {
	time   int64
	user   int32 // index into the users read
	item   int32 // index into the items read
	rating float32
}

// movieLens turns the MovieLens ratings into a Dataset (RELLA.md section 1):
// a stable sort by (timestamp, user id as a string, item id as a string),
// histories of the user's earlier ratings in that order, samples for the
// ratings with at least MinHistory earlier ones, and the global 8:1:1
// chronological split of the samples in that same order.
//
// users and items are all that the files hold; the Dataset keeps those that
// some rating names, in the files' order. label decides a rating's label.
func movieLens(kind Kind, users []User, items []Item, ratings []mlRating, opts Options, rep *Report, label func(float32) int8) *Dataset {
	userRank := idRanks(len(users), func(i int) string { return users[i].ID })
	itemRank := idRanks(len(items), func(i int) string { return items[i].ID })
	slices.SortStableFunc(ratings, func(a, b mlRating) int {
		if c := cmp.Compare(a.time, b.time); c != 0 {
			return c
		}
		if c := cmp.Compare(userRank[a.user], userRank[b.user]); c != 0 {
			return c
		}
		return cmp.Compare(itemRank[a.item], itemRank[b.item])
	})

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

// idRanks returns each id's rank in the lexicographic order of the ids as
// strings.
func idRanks(n int, id func(int) string) []int32 {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int { return cmp.Compare(id(int(a)), id(int(b))) })
	rank := make([]int32, n)
	for r, i := range idx {
		rank[i] = int32(r)
	}
	return rank
}
