// Scalar packing of codes, least significant bits first: the reference, which the vector paths
// also use for their last few codes. Included inside each ISA's namespace (like
// quant_driver_inl.h, and for the same reason), before that ISA's Ops.

// Packs n codes (n a multiple of 8 / bits) into n * bits / 8 bytes.
inline void pack_codes_scalar(const uint8_t* codes, int64_t n, int bits, uint8_t* packed) {
  const int per_byte = 8 / bits;
  for (int64_t byte = 0; byte < n / per_byte; ++byte) {
    unsigned v = 0;
    for (int j = 0; j < per_byte; ++j) v |= static_cast<unsigned>(codes[byte * per_byte + j]) << (j * bits);
    packed[byte] = static_cast<uint8_t>(v);
  }
}

inline void unpack_codes_scalar(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t byte = 0; byte < n / per_byte; ++byte) {
    for (int j = 0; j < per_byte; ++j) {
      codes[byte * per_byte + j] = static_cast<uint8_t>((packed[byte] >> (j * bits)) & mask);
    }
  }
}
