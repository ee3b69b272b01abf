// zlib (Debian's zlib1g-dev): gzip for old audit segments (`tokenvault audit compress`).
#include <zlib.h>
