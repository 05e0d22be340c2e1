// Package ncclcomm is a distributed.Communicator whose float32 all-reduce
// (the LoRA gradients, the one large collective of a training step) runs on
// the GPUs through NCCL, and whose other operations (float64 sums of the
// loss and token counts, the stop flags, broadcasts, barriers: a few bytes
// each) go through the TCP group that also handed NCCL's unique id from
// rank 0 to the others.
//
// The gradients live on the host between steps (the trainer's AdamW runs
// there), so each all-reduce uploads them to a device buffer, reduces it in
// place with ncclAllReduce on the device's stream and downloads the result:
// two PCIe copies of a LoRA gradient (tens of MB) per step.
//
// NCCL sums in its own order (ring or tree, chosen by NCCL), not rank order:
// every rank gets the same bits, so adapters stay identical, but a run with
// W > 1 GPUs matches the single-process reference only to float32 rounding.
// With one rank the all-reduce is a copy and the run equals the plain path
// bit for bit (the device script checks that).
//
// Behind the build tag rellagpu; without it New returns an error.
package ncclcomm
