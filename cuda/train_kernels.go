package cuda

// Names of the training kernels in kernels/train.cu (extern "C").
const (
	kCastElem        = "cast_elem"
	kRMSNormBwd      = "rmsnorm_bwd"
	kRoPEBwd         = "rope_bwd"
	kAttentionFwd    = "attention_fwd"
	kAttentionBwdPre = "attention_bwd_pre"
	kAttentionBwdDQ  = "attention_bwd_dq"
	kAttentionBwdDKV = "attention_bwd_dkv"
	kSwiGLUBwd       = "swiglu_bwd"
	kDropoutMask     = "dropout_mask"
	kDropoutApply    = "dropout_apply"
	kMaskMulAdd      = "mask_mul_add"
	kGatherRows      = "gather_rows"
	kScatterAddRows  = "scatter_add_rows"
	kCEStats         = "ce_stats"
	kCEFinish        = "ce_finish"
	kCEGrad          = "ce_grad"
	kAdamW           = "adamw"
	kScaleF32        = "scale_f32"
	kSumSqPartial    = "sumsq_partial"
	kSumPartials     = "sum_partials"
	kDequantInt8     = "dequant_int8"
)

// trainKernelNames lists the training kernels; KernelNames includes them.
var trainKernelNames = []string{kCastElem, kRMSNormBwd, kRoPEBwd, kAttentionFwd, kAttentionBwdPre, kAttentionBwdDQ,
	kAttentionBwdDKV, kSwiGLUBwd, kDropoutMask, kDropoutApply, kMaskMulAdd, kGatherRows, kScatterAddRows,
	kCEStats, kCEFinish, kCEGrad, kAdamW, kScaleF32, kSumSqPartial, kSumPartials, kDequantInt8}

// dropRun is the number of consecutive draws one thread of dropout_mask
// makes (DROP_RUN in train.cu).
const dropRun = 64
