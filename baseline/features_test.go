package baseline

import (
	"slices"
	"testing"

	"github.com/rella-project/rella/data"
)

// tinyML1M is a hand-built dataset: user 0 rated items 0,1,2,3 (train
// samples at positions 2 and 3), user 1 rated items 1,4 and is only in test,
// where item 4 is new.
func tinyML1M() *data.Dataset {
	return &data.Dataset{
		Kind: data.ML1M,
		Users: []data.User{
			{ID: "10", Gender: "male", Age: "25-34", Occupation: "writer", Zip: "111"},
			{ID: "20", Gender: "female", Age: "18-24", Occupation: "artist", Zip: "222"},
		},
		Items: []data.Item{{ID: "a", Genre: "Comedy"}, {ID: "b", Genre: "Drama"}, {ID: "c", Genre: "Comedy"}, {ID: "d", Genre: "War"}, {ID: "e", Genre: "Horror"}},
		Seqs: [][]data.Event{
			{{Item: 0, Rating: 5}, {Item: 1, Rating: 2}, {Item: 2, Rating: 4}, {Item: 3, Rating: 1}},
			{{Item: 1, Rating: 3}, {Item: 4, Rating: 5}},
		},
		Train: []data.Sample{{User: 0, Pos: 2, Label: 1}, {User: 0, Pos: 3, Label: 0}},
		Test:  []data.Sample{{User: 1, Pos: 1, Label: 1}},
	}
}

func TestFeaturesVocabulariesFromTrainOnly(t *testing.T) {
	ds := tinyML1M()
	f, err := NewFeatures(ds, ds.Train, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.UserVocabs[0].Values(), []string{"", "10"}; !slices.Equal(got, want) {
		t.Errorf("user ids %q, want %q", got, want)
	}
	if got, want := f.ItemVocabs[0].Values(), []string{"", "a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("item ids %q, want %q", got, want)
	}
	if got, want := f.ItemVocabs[1].Values(), []string{"", "Comedy", "Drama", "War"}; !slices.Equal(got, want) {
		t.Errorf("genres %q, want %q", got, want)
	}
	if got, want := f.Ratings.Values(), []string{"", "5", "2", "4", "1"}; !slices.Equal(got, want) {
		t.Errorf("ratings %q, want %q", got, want)
	}
	// The test user and the new item are out of vocabulary in every field.
	for i := range f.UserVocabs {
		if id := f.UserID(1, i); id != 0 {
			t.Errorf("test-only user field %s = %d, want 0", f.UserVocabs[i].Name, id)
		}
	}
	for i := range f.ItemVocabs {
		if id := f.ItemID(4, i); id != 0 {
			t.Errorf("test-only item field %s = %d, want 0", f.ItemVocabs[i].Name, id)
		}
	}
}

func TestBatchKeepsLastLHistoryOldestFirst(t *testing.T) {
	ds := tinyML1M()
	f, err := NewFeatures(ds, ds.Train, 2)
	if err != nil {
		t.Fatal(err)
	}
	bt := f.NewBatch(3)
	if err := f.Fill(bt, []data.Sample{ds.Train[1], ds.Test[0]}); err != nil {
		t.Fatal(err)
	}
	// Train[1]: target d (index 4), history a,b,c -> last two b,c.
	if bt.Item[0][0] != 4 || bt.Item[1][0] != 3 {
		t.Errorf("target fields %d/%d, want 4 (d) / 3 (War)", bt.Item[0][0], bt.Item[1][0])
	}
	if got, want := bt.Hist[0][0:2], []int32{2, 3}; !slices.Equal(got, want) {
		t.Errorf("history items %v, want %v (b, c)", got, want)
	}
	if got, want := bt.HistRate[0:2], []int32{f.Ratings.ID("2"), f.Ratings.ID("4")}; !slices.Equal(got, want) {
		t.Errorf("history ratings %v, want %v", got, want)
	}
	if bt.Len[0] != 2 || bt.longStart[0] != 1 {
		t.Errorf("len %d long start %d, want 2, 1", bt.Len[0], bt.longStart[0])
	}
	// Test[0]: one history item (b, known), target e unknown; padding after.
	if bt.Len[1] != 1 || bt.Hist[0][2] != 2 || bt.Hist[0][3] != 0 || bt.Item[0][1] != 0 {
		t.Errorf("test row: len %d hist %v target %d", bt.Len[1], bt.Hist[0][2:4], bt.Item[0][1])
	}
	if bt.N != 2 || bt.Weight[2] != 0 || bt.Len[2] != 0 || bt.Weight[1] != 1 || bt.Label[1] != 1 {
		t.Errorf("padding row: n %d weight %v len %v", bt.N, bt.Weight, bt.Len)
	}
}

func TestFeaturesPerDataset(t *testing.T) {
	for _, c := range []struct {
		kind        data.Kind
		users       []string
		items       []string
		searchField string
	}{
		{data.ML1M, []string{"user_id", "gender", "age", "occupation", "zip"}, []string{"item_id", "genre"}, "genre"},
		{data.BookCrossing, []string{"user_id", "location", "age"}, []string{"item_id", "author", "year", "publisher"}, "author"},
		{data.ML25M, []string{"user_id"}, []string{"item_id", "genre"}, "genre"},
	} {
		ds := tinyML1M()
		ds.Kind = c.kind
		f, err := NewFeatures(ds, ds.Train, 3)
		if err != nil {
			t.Fatal(err)
		}
		var us, is []string
		for _, v := range f.UserVocabs {
			us = append(us, v.Name)
		}
		for _, v := range f.ItemVocabs {
			is = append(is, v.Name)
		}
		if !slices.Equal(us, c.users) || !slices.Equal(is, c.items) || is[f.Search] != c.searchField {
			t.Errorf("%s: fields %v / %v search %s, want %v / %v search %s", c.kind, us, is, is[f.Search], c.users, c.items, c.searchField)
		}
	}
}
