/**
 * IBC errors, named after VVR's (EIBC_NO_APPLICATION, EIBC_IBC_PENDING, ...). The CLI prints the
 * name first on stderr and exits non-zero; the control socket carries it as the error code.
 */
export type IbcErrorName =
  | 'EIBC_NO_APPLICATION'    // the name is not registered on this host (or the key is wrong)
  | 'EIBC_IBC_PENDING'       // a delivery or an unfreeze is pending for the name
  | 'EIBC_DUP_APPLICATION'   // the name is already registered
  | 'EIBC_MAX_REGISTRATIONS' // the RVG has the most registrations it may have
  | 'EIBC_INVALID_NAME'      // empty, too long, or characters outside [A-Za-z0-9._-]
  | 'EIBC_INVALID_ARGUMENT'  // a bad timeout or flag
  | 'EIBC_MSG_LENGTH'        // the message is longer than IBC_MESSAGE_BYTES_MAX
  | 'EIBC_NO_MESSAGE'        // receive timed out with no message
  | 'EIBC_NOT_FROZEN'        // unfreeze when the name has not frozen the Secondary
  | 'EIBC_WRONG_ROLE'        // send on a Secondary, receive/unfreeze on a Primary
  | 'EIBC_TASK_FAILED'       // a script of `ibc run` failed

export class IbcError extends Error {
  constructor (readonly code: IbcErrorName, message: string) {
    super(message)
    this.name = 'IbcError'
  }
}
