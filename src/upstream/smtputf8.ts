import SMTPConnection from 'nodemailer/lib/smtp-connection';

/**
 * SMTPUTF8 (RFC 6531 §3.4) on MAIL FROM when the device declared it, not only when an envelope
 * address is non-ASCII. After the rewrite the envelope sender is the (ASCII) mailbox, but the
 * header may still carry UTF-8 (the device's address in Reply-To, raw UTF-8 fields), and a server
 * may refuse or mangle such a message without the parameter. nodemailer decides SMTPUTF8 from the
 * addresses only and has no option for it, so its MAIL FROM is completed here, for envelopes the
 * SMTP transport marks with `smtpUtf8` and only where the server offers the extension.
 */
interface ConnectionInternals {
  _envelope?: { smtpUtf8?: boolean };
  _supportedExtensions: string[];
  _usingSmtpUtf8?: boolean;
  _sendCommand(command: string, logText?: string): void;
}

const prototype = SMTPConnection.prototype as unknown as ConnectionInternals;
const sendCommand = prototype._sendCommand;

prototype._sendCommand = function (this: ConnectionInternals, command: string, logText?: string): void {
  if (this._envelope?.smtpUtf8 === true && command.startsWith('MAIL FROM:') && !/ SMTPUTF8(?: |$)/.test(command) && this._supportedExtensions.includes('SMTPUTF8')) {
    this._usingSmtpUtf8 = true;
    return sendCommand.call(this, `${command} SMTPUTF8`, logText);
  }
  return sendCommand.call(this, command, logText);
};
