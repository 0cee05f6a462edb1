#include "st_status.h"

const char *st_status_str(st_status_t s)
{
    switch (s) {
    case ST_OK:              return "success";
    case ST_INPROGRESS:      return "in progress";
    case ST_ERR_INVALID:     return "invalid argument";
    case ST_ERR_NOMEM:       return "out of memory";
    case ST_ERR_IO:          return "input/output error";
    case ST_ERR_FORMAT:      return "malformed input";
    case ST_ERR_UNSUPPORTED: return "unsupported";
    case ST_ERR_NOT_FOUND:   return "not found";
    case ST_ERR_TYPE:        return "wrong type";
    case ST_ERR_RANGE:       return "out of range";
    case ST_ERR_OVERFLOW:    return "size overflow";
    case ST_ERR_TIMEOUT:     return "timed out";
    case ST_ERR_PEER:        return "peer failure";
    case ST_ERR_PROTOCOL:    return "protocol violation";
    case ST_ERR_AUTH:        return "authentication failed";
    case ST_ERR_BUSY:        return "busy";
    case ST_ERR_CANCELED:    return "cancelled";
    case ST_ERR_CLOSED:      return "closed";
    case ST_ERR_NO_DEVICE:   return "no such device";
    case ST_ERR_BACKEND:     return "backend error";
    case ST_ERR_INTERNAL:    return "internal error";
    }
    return "unknown status";
}
