/*
 * The Smack Integration Test Framework with Smack's OMEMO service (smack-omemo-signal)
 * registered: the framework registers none, and its OMEMO test classes are impossible
 * without one ("No OmemoService registered"). tests/support/sinttest.py runs this file
 * in Java's source-file mode, with the jars of pom.xml's "omemo" profile.
 */
import java.security.Security;

import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.igniterealtime.smack.inttest.SmackIntegrationTestFramework;
import org.jivesoftware.smackx.omemo.signal.SignalOmemoService;

public class OmemoSignalSinttest {
    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        SignalOmemoService.acknowledgeLicense();
        SignalOmemoService.setup();
        SmackIntegrationTestFramework.main(args);
    }
}
