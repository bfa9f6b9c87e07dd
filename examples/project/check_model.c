/* Links the model array mcc_add_model() generated and checks what firmware relies on: the array is 16-byte
   aligned and as long as the header says; prints its length and FNV-1a checksum, which the tests compare with
   the .tflite file's bytes. MODEL (the array's name), MODEL_UPPER and MODEL_HEADER come from CMakeLists.txt. */
#include <stdint.h>
#include <stdio.h>

#include MODEL_HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

int main(void) {
  uint32_t hash = 2166136261u; /* FNV-1a, 32 bit */
  for (unsigned int i = 0; i < CAT(MODEL, _len); i++) {
    hash = (hash ^ MODEL[i]) * 16777619u;
  }
  int aligned = ((uintptr_t)MODEL % 16) == 0;
  int sized = CAT(MODEL, _len) == CAT(MODEL_UPPER, _MODEL_BYTES) && sizeof(MODEL) == CAT(MODEL, _len);
  printf("bytes=%u fnv1a=%08x aligned=%d arena=%d\n", CAT(MODEL, _len), (unsigned)hash, aligned,
         (int)CAT(MODEL_UPPER, _ARENA_BYTES));
  return aligned && sized ? 0 : 1;
}
