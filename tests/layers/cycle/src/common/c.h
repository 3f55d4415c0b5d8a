/* The bottom layer including a higher one. */
#include "a/a.h"
