"""Free-mail domains: an address there never makes an Account match.

The built-in list covers the large consumer providers; the configuration's
``linking.free_mail_domains`` extends it.
"""

FREE_MAIL_DOMAINS = frozenset(
    """
    aol.com aim.com att.net bellsouth.net bigpond.com btinternet.com charter.net
    comcast.net cox.net earthlink.net excite.com fastmail.com fastmail.fm free.fr
    gmail.com googlemail.com gmx.com gmx.de gmx.net hey.com hotmail.co.uk
    hotmail.com hotmail.de hotmail.fr hushmail.com icloud.com juno.com laposte.net
    libero.it live.ca live.co.uk live.com live.de live.fr lycos.com mac.com mail.com
    mail.ru me.com msn.com naver.com netscape.net netzero.net ntlworld.com
    optonline.net orange.fr outlook.com outlook.de outlook.fr pm.me prodigy.net
    proton.me protonmail.com qq.com 163.com 126.com rediffmail.com rocketmail.com
    sbcglobal.net sky.com swbell.net t-online.de talktalk.net tutanota.com
    verizon.net virgilio.it wanadoo.fr web.de windowslive.com yahoo.ca yahoo.co.in
    yahoo.co.jp yahoo.co.uk yahoo.com yahoo.com.au yahoo.de yahoo.es yahoo.fr
    yahoo.it yandex.com yandex.ru ymail.com zoho.com zohomail.com flash.net
    mindspring.com worldnet.att.net usa.net email.com inbox.com
    """.split()
)
