/* A C program built against the installed package: runs one small attention call. */
#include <math.h>
#include <ringattn/ringattn.h>
#include <stdio.h>
#include <string.h>

static void make(ringattn_tensor_t* t, float* data, int64_t s, int64_t h, int64_t d) {
  memset(t, 0, sizeof(*t));
  t->data = data;
  t->dtype = RINGATTN_FLOAT32;
  t->ndim = 4;
  t->shape[0] = 1, t->shape[1] = s, t->shape[2] = h, t->shape[3] = d;
  t->strides[0] = s * h * d, t->strides[1] = h * d, t->strides[2] = d, t->strides[3] = 1;
}

int main(void) {
  enum { S = 3, H = 1, D = 32 };
  static float q[S * H * D], k[S * H * D], v[S * H * D], o[S * H * D];
  for (int i = 0; i < S * H * D; ++i) {
    q[i] = 0.01f * (float)(i % 7);
    k[i] = 0.02f * (float)(i % 5);
    v[i] = (float)(i / D); /* row j of V is all j */
  }
  ringattn_tensor_t tq, tk, tv, to;
  make(&tq, q, S, H, D);
  make(&tk, k, S, H, D);
  make(&tv, v, S, H, D);
  make(&to, o, S, H, D);
  ringattn_attn_params_t params = RINGATTN_ATTN_PARAMS_INIT;
  params.causal = 1;
  ringattn_status_t st =
      ringattn_attention_forward(&tq, &tk, &tv, &to, NULL, &params, RINGATTN_BACKEND_CPU, NULL);
  if (st != RINGATTN_SUCCESS) {
    fprintf(stderr, "%s: %s\n", ringattn_status_string(st), ringattn_get_last_error());
    return 1;
  }
  /* Causal: the first row sees only key 0, whose value is 0. */
  if (fabsf(o[0]) > 1e-6f) {
    fprintf(stderr, "unexpected output %f\n", o[0]);
    return 1;
  }
  printf("ringattn %d ok\n", ringattn_get_version());
  return 0;
}
