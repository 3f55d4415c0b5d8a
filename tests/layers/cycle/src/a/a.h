/* A directory that includes b, which includes a: a cycle. */
#include "b/b.h"
