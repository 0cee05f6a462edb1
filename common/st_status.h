/*
 * st_status.h - the one status enum of strata.
 *
 * Every fallible function in every layer returns st_status_t (or writes one).
 * Zero is success, ST_INPROGRESS marks an asynchronous operation that has
 * been started but not finished (as UCS_INPROGRESS does in UCX), and all
 * errors are negative so that `if (status < 0)` reads naturally.
 * st_status_str() gives a short, stable English name for logs and errors.
 */
#ifndef ST_STATUS_H
#define ST_STATUS_H

typedef enum st_status {
    ST_OK              =   0,
    ST_INPROGRESS      =   1,  /* started, completion reported later        */
    ST_ERR_INVALID     =  -1,  /* bad argument from the caller              */
    ST_ERR_NOMEM       =  -2,  /* allocation failed                         */
    ST_ERR_IO          =  -3,  /* read/write/open/mmap failed               */
    ST_ERR_FORMAT      =  -4,  /* malformed input (file, message, request)  */
    ST_ERR_UNSUPPORTED =  -5,  /* valid but not supported by this build     */
    ST_ERR_NOT_FOUND   =  -6,  /* key, tensor, endpoint, ... not present    */
    ST_ERR_TYPE        =  -7,  /* value present with another type           */
    ST_ERR_RANGE       =  -8,  /* value outside its allowed range           */
    ST_ERR_OVERFLOW    =  -9,  /* arithmetic on sizes would overflow        */
    ST_ERR_TIMEOUT     = -10,  /* deadline passed                           */
    ST_ERR_PEER        = -11,  /* remote side failed or disconnected        */
    ST_ERR_PROTOCOL    = -12,  /* wire message violates the protocol        */
    ST_ERR_AUTH        = -13,  /* authentication or authorisation failed    */
    ST_ERR_BUSY        = -14,  /* resource exhausted, try later             */
    ST_ERR_CANCELED    = -15,  /* operation cancelled                       */
    ST_ERR_CLOSED      = -16,  /* object already shut down                  */
    ST_ERR_NO_DEVICE   = -17,  /* required hardware (GPU, NIC) absent       */
    ST_ERR_BACKEND     = -18,  /* a library underneath reported an error    */
    ST_ERR_INTERNAL    = -19   /* invariant broken: a bug in strata         */
} st_status_t;

const char *st_status_str(st_status_t status);

#endif /* ST_STATUS_H */
