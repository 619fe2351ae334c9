import type { ResolvedAccount } from '../../config/index.js';
import { actionForm, escape, layout, type Notice, type Csrf } from '../html.js';
import type { ConsoleSources } from '../sources.js';

/** The test message form (Overview and Set up): one account, one recipient, sent at once. */
export function testMessageForm(sources: ConsoleSources, csrf: Csrf): string {
  if (csrf === undefined) return '';
  const options = [...sources.accounts.values()].map(({ account }) => `<option value="${escape(account.name)}">${escape(account.name)} (${escape(account.mailbox)})</option>`).join('');
  return `<section class="card"><h2>Send test message</h2>
<form method="post" action="/test-message"><input type="hidden" name="csrf" value="${csrf}">
<label>Account<select name="account">${options}</select></label>
<label>To<input type="email" name="to" required placeholder="you@example.com" autocomplete="email"></label>
<button>Send test message</button></form></section>`;
}

const code = (lines: string[]) => `<pre><code>${escape(lines.join('\n'))}</code></pre>`;

function microsoft(account: ResolvedAccount, redirectUri: string | undefined): string {
  const mailbox = account.mailbox;
  if (account.flow === 'client_credentials') {
    return `<ol>
<li>Entra admin centre › App registrations › <em>your app</em> › API permissions: add <strong>Office 365 Exchange Online › Application permissions › SMTP.SendAsApp</strong>, then <strong>Grant admin consent</strong>.</li>
<li>${account.clientCertificateFile ? 'Certificates &amp; secrets: upload the certificate (<code>smtp-oauth-relay credentials create-certificate ' + escape(account.name) + '</code> makes one).' : 'Certificates &amp; secrets: create a client secret; put it in the config and its end date in <code>credentialExpiresAt</code>.'}</li>
<li>Exchange Online PowerShell (<code>Connect-ExchangeOnline</code>): register the app's service principal and give it the mailbox. The object id is the <em>Enterprise application</em>'s, not the app registration's. Application access policies are deprecated: use RBAC for Applications to scope the app.
${code([
  `Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false`,
  `New-ServicePrincipal -AppId ${account.clientId} -ObjectId <ENTERPRISE-APP-OBJECT-ID>`,
  `Add-MailboxPermission -Identity ${mailbox} -User <ENTERPRISE-APP-OBJECT-ID> -AccessRights FullAccess`,
  `# or, scoped with RBAC for Applications instead of FullAccess:`,
  `New-ManagementScope -Name "smtp-oauth-relay ${mailbox}" -RecipientRestrictionFilter "PrimarySmtpAddress -eq '${mailbox}'"`,
  `New-ManagementRoleAssignment -App <ENTERPRISE-APP-OBJECT-ID> -Role "Application SMTP.SendAsApp" -CustomResourceScope "smtp-oauth-relay ${mailbox}"`,
])}</li>
</ol>`;
  }
  return `<ol>
<li>Entra admin centre › App registrations › <em>your app</em> › Authentication: add the platform <strong>Web</strong> with the redirect URI ${redirectUri ? `<code>${escape(redirectUri)}</code>` : '<span class="bad">(set <code>http.publicUrl</code> to the address you open this console at; the redirect URI is that address followed by /oauth/callback)</span>'}. For <code>smtp-oauth-relay login</code> without a browser, also set <strong>Allow public client flows</strong> to Yes (device code).</li>
<li>API permissions: <strong>Microsoft Graph › Delegated › offline_access</strong> and <strong>Office 365 Exchange Online › Delegated › SMTP.Send</strong> (scope <code>https://outlook.office.com/SMTP.Send offline_access</code>).</li>
<li>Exchange Online PowerShell (<code>Connect-ExchangeOnline</code>): allow SMTP AUTH for the mailbox (Basic auth stays off; only OAuth is used).
${code([`Set-CASMailbox -Identity ${mailbox} -SmtpClientAuthenticationDisabled $false`, ...(account.sendAs.length ? account.sendAs.map((address) => `Add-RecipientPermission -Identity ${address} -Trustee ${mailbox} -AccessRights SendAs`) : [])])}</li>
<li>Sign in below as <strong>${escape(mailbox)}</strong>.</li>
</ol>`;
}

/** Microsoft Graph sendMail: Mail.Send instead of SMTP AUTH (which may stay off for the tenant). */
function microsoftGraph(account: ResolvedAccount, redirectUri: string | undefined): string {
  const mailbox = account.mailbox;
  if (account.flow === 'client_credentials') {
    return `<ol>
<li>Entra admin centre › App registrations › <em>your app</em> › API permissions: <strong>Microsoft Graph › Application permissions › Mail.Send</strong>${account.upstream.saveToSentItems ? '' : ' and <strong>Mail.ReadWrite</strong> (the relay deletes the copies Graph files in Sent Items; or set <code>upstream.saveToSentItems: true</code>)'}, then <strong>Grant admin consent</strong>. That lets the app act on every mailbox; to allow only ${escape(mailbox)}, skip this step and use the RBAC for Applications lines below instead.</li>
<li>${account.clientCertificateFile ? 'Certificates &amp; secrets: upload the certificate (<code>smtp-oauth-relay credentials create-certificate ' + escape(account.name) + '</code> makes one).' : 'Certificates &amp; secrets: create a client secret; put it in the config and its end date in <code>credentialExpiresAt</code>.'}</li>
<li>Exchange Online PowerShell (<code>Connect-ExchangeOnline</code>), to scope the app to this mailbox. SMTP AUTH may stay off.
${code([
  `New-ServicePrincipal -AppId ${account.clientId} -ObjectId <ENTERPRISE-APP-OBJECT-ID> -DisplayName smtp-oauth-relay`,
  `New-ManagementScope -Name "smtp-oauth-relay ${mailbox}" -RecipientRestrictionFilter "PrimarySmtpAddress -eq '${mailbox}'"`,
  `New-ManagementRoleAssignment -App ${account.clientId} -Role "Application Mail.Send" -CustomResourceScope "smtp-oauth-relay ${mailbox}"`,
  ...(account.upstream.saveToSentItems ? [] : [`New-ManagementRoleAssignment -App ${account.clientId} -Role "Application Mail.ReadWrite" -CustomResourceScope "smtp-oauth-relay ${mailbox}"`]),
  `Test-ServicePrincipalAuthorization -Identity ${account.clientId} -Resource ${mailbox}`,
])}</li>
</ol>`;
  }
  return `<ol>
<li>Entra admin centre › App registrations › <em>your app</em> › Authentication: add the platform <strong>Web</strong> with the redirect URI ${redirectUri ? `<code>${escape(redirectUri)}</code>` : '<span class="bad">(set <code>http.publicUrl</code>; the redirect URI is it followed by /oauth/callback)</span>'}.</li>
<li>API permissions: <strong>Microsoft Graph › Delegated › Mail.Send</strong> and <strong>offline_access</strong> (scope <code>${escape(account.scopes ?? '')}</code>). SMTP AUTH may stay off.</li>
<li>Sign in below as <strong>${escape(mailbox)}</strong>.</li>
</ol>`;
}

function google(account: ResolvedAccount, redirectUri: string | undefined): string {
  const scope = escape(account.scopes ?? 'https://mail.google.com/');
  const api = account.upstream.transport === 'gmail' ? '<li>Google Cloud console › APIs &amp; Services › Library: enable the <strong>Gmail API</strong> in the project of the OAuth client.</li>' : '';
  if (account.flow === 'service_account') {
    return `<ol>${api}
<li>Google Cloud console: create a service account with a JSON key (<code>serviceAccountKeyFile</code>).</li>
<li>Google Workspace Admin › Security › API controls › Domain-wide delegation: add its client id with the scope <code>${scope}</code>.</li>
<li>The relay then sends as <strong>${escape(account.mailbox)}</strong> without a sign-in.</li>
</ol>`;
  }
  return `<ol>${api}
<li>Google Cloud console › APIs &amp; Services › Credentials: an OAuth client of type <strong>Web application</strong> with the authorised redirect URI ${redirectUri ? `<code>${escape(redirectUri)}</code>` : '<span class="bad">(set <code>http.publicUrl</code>; the redirect URI is it followed by /oauth/callback)</span>'}.</li>
<li>OAuth consent screen: add the scope <code>${scope}</code>, and set the publishing status to <strong>In production</strong>. <span class="bad">An app left in "Testing" gets refresh tokens that die after 7 days.</span></li>
<li>Sign in below as <strong>${escape(account.mailbox)}</strong>.</li>
</ol>`;
}

export function renderSetup(sources: ConsoleSources, csrf: Csrf, publicUrl: string | undefined, notice?: Notice): string {
  const redirectUri = publicUrl ? `${publicUrl.replace(/\/$/, '')}/oauth/callback` : undefined;
  const sections = [...sources.accounts.values()].map(({ account }) => {
    const steps = account.provider === 'microsoft' ? (account.upstream.transport === 'graph' ? microsoftGraph : microsoft)(account, redirectUri) : account.provider === 'google' ? google(account, redirectUri) : '<p>A custom provider: register the redirect URI below at its authorisation server, with a scope that allows SMTP.</p>';
    const signIn = account.flow === 'refresh_token' && account.authorizeUrl
      ? actionForm(`/accounts/${encodeURIComponent(account.name)}/sign-in`, csrf, `Sign in ${account.name}`)
      : '';
    return `<section class="card" id="setup-${escape(account.name)}"><h2>${escape(account.name)} <small>${escape(account.mailbox)} · ${escape(account.provider)} · ${escape(account.flow ?? 'refresh_token')} · ${escape(account.upstream.transport)}</small></h2>${steps}${signIn}</section>`;
  });
  return layout('setup', 'Set up', `${sections.join('\n')}\n${testMessageForm(sources, csrf)}`, notice);
}
