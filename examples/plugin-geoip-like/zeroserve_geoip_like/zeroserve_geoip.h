/* zeroserve_geoip.h: the helper of the zeroserve-geoip-like plugin (--plugins geoip). */
#ifndef ZEROSERVE_GEOIP_H
#define ZEROSERVE_GEOIP_H

#include "zeroserve.h"

/* The country code of an IP address (IPv4 or IPv6 text, optionally with
 * ":port" or "[v6]:port" as zs_req_peer gives it). C-string; "" when the
 * address is in no range; -1 when the text is not an IP address. */
extern zs_s64 zs_geoip_country(const char *ip, zs_u64 ip_len, char *out, zs_u64 out_len);

#endif
