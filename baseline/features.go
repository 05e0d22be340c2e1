// Package baseline trains the paper's ID-based CTR baselines (DeepFM,
// DCNv2, DIN, SIM and a SASRec-style model) on the very samples and splits
// the LLM uses, as Gorgonia graphs trained with Adam on the CPU.
//
// Every sample becomes categorical ID fields (the user's and the target
// item's, per dataset as the paper lists them) and a behaviour sequence: the
// last L items the user rated before the target, with their ratings.
// Vocabularies are built on the training split; index 0 of every
// vocabulary is the out-of-vocabulary value (and the padding of sequences),
// whose embedding is a fixed zero vector.
package baseline

import (
	"fmt"
	"strconv"

	"github.com/rella-project/rella/data"
)

// Vocab maps the values of one field to dense indices 1..Size()-1; 0 is
// the out-of-vocabulary index.
type Vocab struct {
	Name   string
	index  map[string]int32
	values []string // values[0] = "" (OOV)
}

func newVocab(name string) *Vocab {
	return &Vocab{Name: name, index: map[string]int32{}, values: []string{""}}
}

// add returns v's index, adding it when new.
func (v *Vocab) add(s string) int32 {
	if i, ok := v.index[s]; ok {
		return i
	}
	i := int32(len(v.values))
	v.index[s] = i
	v.values = append(v.values, s)
	return i
}

// ID returns the index of s, 0 when s was not seen in training.
func (v *Vocab) ID(s string) int32 { return v.index[s] }

// Size is the number of indices, the OOV index included.
func (v *Vocab) Size() int { return len(v.values) }

// Values returns the values in index order ("" first, for OOV).
func (v *Vocab) Values() []string { return v.values }

// fieldSpec names a field and reads its value.
type fieldSpec[T any] struct {
	name string
	get  func(T) string
}

type (
	userSpec = fieldSpec[*data.User]
	itemSpec = fieldSpec[*data.Item]
)

// specs returns the ID fields of a dataset's users and items (ReLLa paper,
// section 4.1.3) and the item field SIM's hard search matches on.
func specs(kind data.Kind) (users []userSpec, items []itemSpec, search int, err error) {
	uid := userSpec{"user_id", func(u *data.User) string { return u.ID }}
	iid := itemSpec{"item_id", func(i *data.Item) string { return i.ID }}
	genre := itemSpec{"genre", func(i *data.Item) string { return i.Genre }}
	switch kind {
	case data.ML1M:
		return []userSpec{uid,
				{"gender", func(u *data.User) string { return u.Gender }},
				{"age", func(u *data.User) string { return u.Age }},
				{"occupation", func(u *data.User) string { return u.Occupation }},
				{"zip", func(u *data.User) string { return u.Zip }},
			}, []itemSpec{iid, genre},
			1, nil
	case data.ML25M:
		return []userSpec{uid}, []itemSpec{iid, genre}, 1, nil
	case data.BookCrossing:
		return []userSpec{uid,
				{"location", func(u *data.User) string { return u.Location }},
				{"age", func(u *data.User) string { return u.Age }},
			}, []itemSpec{iid,
				{"author", func(i *data.Item) string { return i.Author }},
				{"year", func(i *data.Item) string { return i.Year }},
				{"publisher", func(i *data.Item) string { return i.Publisher }},
			},
			1, nil // books have no genre: the hard search matches the author
	}
	return nil, nil, 0, fmt.Errorf("baseline: dataset %q has no feature definition", kind)
}

// Features encodes a dataset's samples as ID fields and behaviour sequences.
type Features struct {
	Kind       data.Kind
	UserVocabs []*Vocab // one per user field
	ItemVocabs []*Vocab // one per item field; [0] is the item id
	Ratings    *Vocab   // rating values in histories
	HistLen    int      // L, the recent behaviours kept
	Search     int      // index of the item field SIM's hard search matches

	ds      *data.Dataset
	rateIDs map[float32]int32 // Ratings' indices by value
	userIDs []int32           // [len(ds.Users) * len(UserVocabs)]
	itemIDs []int32           // [len(ds.Items) * len(ItemVocabs)]
}

// NewFeatures builds the vocabularies on the training samples train: the
// values of their users and of every item they rated up to their target.
// Values seen only in other splits map to index 0.
func NewFeatures(ds *data.Dataset, train []data.Sample, histLen int) (*Features, error) {
	if histLen < 1 {
		return nil, fmt.Errorf("baseline: history length %d, want at least 1", histLen)
	}
	us, is, search, err := specs(ds.Kind)
	if err != nil {
		return nil, err
	}
	f := &Features{Kind: ds.Kind, HistLen: histLen, Search: search, ds: ds, Ratings: newVocab("rating")}
	for _, s := range us {
		f.UserVocabs = append(f.UserVocabs, newVocab(s.name))
	}
	for _, s := range is {
		f.ItemVocabs = append(f.ItemVocabs, newVocab(s.name))
	}
	// Training users and how far into their sequences training reaches.
	reach := make([]int32, len(ds.Users))
	for i := range reach {
		reach[i] = -1
	}
	for _, s := range train {
		if int(s.User) >= len(ds.Users) || int(s.Pos) >= len(ds.Seqs[s.User]) {
			return nil, fmt.Errorf("baseline: sample (user %d, pos %d) outside the dataset", s.User, s.Pos)
		}
		reach[s.User] = max(reach[s.User], s.Pos)
	}
	seenItem := make([]bool, len(ds.Items))
	var order []int32 // items in order of first appearance
	for _, s := range train {
		u := s.User
		if reach[u] < 0 {
			continue
		}
		for i, sp := range us {
			f.UserVocabs[i].add(sp.get(&ds.Users[u]))
		}
		for _, e := range ds.Seqs[u][:reach[u]+1] {
			if !seenItem[e.Item] {
				seenItem[e.Item] = true
				order = append(order, e.Item)
			}
			f.Ratings.add(ratingKey(e.Rating))
		}
		reach[u] = -1 // each user once
	}
	for _, it := range order {
		for i, sp := range is {
			f.ItemVocabs[i].add(sp.get(&ds.Items[it]))
		}
	}
	f.rateIDs = map[float32]int32{}
	for i, v := range f.Ratings.Values()[1:] {
		r, err := strconv.ParseFloat(v, 32)
		if err != nil {
			return nil, fmt.Errorf("baseline: rating %q: %w", v, err)
		}
		f.rateIDs[float32(r)] = int32(i + 1)
	}
	// Look-up tables for every user and item of the dataset.
	f.userIDs = make([]int32, len(ds.Users)*len(us))
	for u := range ds.Users {
		for i, sp := range us {
			f.userIDs[u*len(us)+i] = f.UserVocabs[i].ID(sp.get(&ds.Users[u]))
		}
	}
	f.itemIDs = make([]int32, len(ds.Items)*len(is))
	for it := range ds.Items {
		if !seenItem[it] {
			continue // an item unseen in training is OOV in every field
		}
		for i, sp := range is {
			f.itemIDs[it*len(is)+i] = f.ItemVocabs[i].ID(sp.get(&ds.Items[it]))
		}
	}
	return f, nil
}

func ratingKey(r float32) string { return strconv.FormatFloat(float64(r), 'g', -1, 32) }

// RatingID returns the index of a rating value (0 when unseen in training).
func (f *Features) RatingID(r float32) int32 { return f.rateIDs[r] }

// UserFields and ItemFields count the fields.
func (f *Features) UserFields() int { return len(f.UserVocabs) }

// ItemFields counts the item fields.
func (f *Features) ItemFields() int { return len(f.ItemVocabs) }

// UserID returns the index of user u's field i.
func (f *Features) UserID(u int32, i int) int32 { return f.userIDs[int(u)*len(f.UserVocabs)+i] }

// ItemID returns the index of item it's field i (0 for an item unseen in training).
func (f *Features) ItemID(it int32, i int) int32 { return f.itemIDs[int(it)*len(f.ItemVocabs)+i] }

// Batch holds B samples as the graphs read them; rows past N are padding
// (weight 0). Sequences are left-aligned, oldest first; position t of row b
// is valid when t < Len[b].
type Batch struct {
	B, N, L   int
	User      [][]int32 // [user field][B]
	Item      [][]int32 // [item field][B]
	Hist      [][]int32 // [item field][B*L]
	HistRate  []int32   // [B*L] rating indices
	Len       []int32   // [B] valid history length
	Label     []float64 // [B]
	Weight    []float64 // [B]: 1 for a sample, 0 for padding
	Samples   []data.Sample
	longStart []int32 // [B] where the recent part of the sequence starts (SIM's long history is before it)
}

// NewBatch allocates a batch of b rows.
func (f *Features) NewBatch(b int) *Batch {
	bt := &Batch{B: b, L: f.HistLen, HistRate: make([]int32, b*f.HistLen), Len: make([]int32, b),
		Label: make([]float64, b), Weight: make([]float64, b), longStart: make([]int32, b)}
	for range f.UserVocabs {
		bt.User = append(bt.User, make([]int32, b))
	}
	for range f.ItemVocabs {
		bt.Item = append(bt.Item, make([]int32, b))
		bt.Hist = append(bt.Hist, make([]int32, b*f.HistLen))
	}
	return bt
}

// Fill encodes samples (at most B) into bt.
func (f *Features) Fill(bt *Batch, samples []data.Sample) error {
	if len(samples) > bt.B {
		return fmt.Errorf("baseline: %d samples for a batch of %d", len(samples), bt.B)
	}
	bt.N = len(samples)
	bt.Samples = append(bt.Samples[:0], samples...)
	clear(bt.HistRate)
	for i := range bt.Hist {
		clear(bt.Hist[i])
	}
	for b := 0; b < bt.B; b++ {
		if b >= len(samples) {
			for i := range bt.User {
				bt.User[i][b] = 0
			}
			for i := range bt.Item {
				bt.Item[i][b] = 0
			}
			bt.Len[b], bt.Label[b], bt.Weight[b], bt.longStart[b] = 0, 0, 0, 0
			continue
		}
		s := samples[b]
		for i := range bt.User {
			bt.User[i][b] = f.UserID(s.User, i)
		}
		target := f.ds.Target(s)
		for i := range bt.Item {
			bt.Item[i][b] = f.ItemID(target.Item, i)
		}
		hist := f.ds.History(s)
		start := max(len(hist)-bt.L, 0)
		recent := hist[start:]
		for t, e := range recent {
			for i := range bt.Hist {
				bt.Hist[i][b*bt.L+t] = f.ItemID(e.Item, i)
			}
			bt.HistRate[b*bt.L+t] = f.RatingID(e.Rating)
		}
		bt.Len[b] = int32(len(recent))
		bt.longStart[b] = int32(start)
		bt.Label[b] = float64(s.Label)
		bt.Weight[b] = 1
	}
	return nil
}
