//! SASL/SCRAM (RFC 5802, the SHA-256 and SHA-512 variants Kafka offers) for
//! [`kafka_wire`](super::kafka_wire): the client's two messages and the check of the server's
//! signature, so a broker that does not know the password is not believed either.

use std::num::NonZeroU32;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use spinscale_core::spec::kafka_connection::Mechanism;

/// More PBKDF2 rounds than this from a server are refused: it would only burn CPU. Kafka's own
/// limit for SCRAM credentials.
const MAX_ITERATIONS: u32 = 16_384;

/// One SCRAM exchange in progress.
pub struct Scram {
    algorithm: (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm),
    password: String,
    client_first_bare: String,
    nonce: String,
}

impl Scram {
    /// A new exchange for `username` with a fresh random nonce.
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Result<Self, String> {
        let mut random = [0u8; 24];
        SystemRandom::new().fill(&mut random).map_err(|_| "no random nonce")?;
        Self::with_nonce(mechanism, username, password, &STANDARD.encode(random))
    }

    fn with_nonce(mechanism: Mechanism, username: &str, password: &str, nonce: &str) -> Result<Self, String> {
        let algorithm = match mechanism {
            Mechanism::ScramSha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256),
            Mechanism::ScramSha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512),
            Mechanism::Plain => return Err("PLAIN is not SCRAM".into()),
        };
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Ok(Self {
            algorithm,
            password: password.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_string(),
        })
    }

    /// The client-first message.
    pub fn client_first(&self) -> Bytes {
        Bytes::from(format!("n,,{}", self.client_first_bare))
    }

    /// The client-final message for `server_first`, and the server signature to expect.
    pub fn client_final(&self, server_first: &[u8]) -> Result<(Bytes, Vec<u8>), String> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let field = |key: &str| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(key))
                .ok_or_else(|| format!("server-first has no {key}"))
        };
        let nonce = field("r=")?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err("server-first does not extend the client's nonce".into());
        }
        let salt = STANDARD.decode(field("s=")?).map_err(|_| "server-first salt is not base64")?;
        let iterations: u32 = field("i=")?.parse().map_err(|_| "server-first iteration count is not a number")?;
        let iterations = NonZeroU32::new(iterations)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or_else(|| format!("server-first asks for {iterations} iterations"))?;
        let (kdf, mac, hash) = self.algorithm;
        let mut salted = vec![0u8; hash.output_len()];
        pbkdf2::derive(kdf, iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(&hmac::Key::new(mac, stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(signature.as_ref()).map(|(k, s)| k ^ s).collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let expected = hmac::sign(&hmac::Key::new(mac, server_key.as_ref()), auth_message.as_bytes());
        Ok((Bytes::from(format!("{without_proof},p={}", STANDARD.encode(proof))), expected.as_ref().to_vec()))
    }

    /// Checks the server-final message against the signature [`client_final`](Self::client_final) expects.
    pub fn verify_server_final(server_final: &[u8], expected: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {}", super::kafka_wire::shown(error)));
        }
        let signature = text.strip_prefix("v=").ok_or("server-final has no signature")?;
        let signature =
            STANDARD.decode(signature.split(',').next().unwrap_or_default()).map_err(|_| "bad signature")?;
        if signature == expected {
            Ok(())
        } else {
            Err("the server's signature is wrong: it does not know the password".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SCRAM-SHA-256 example exchange of RFC 7677, section 3.
    #[test]
    fn the_rfc_7677_exchange() {
        let scram = Scram::with_nonce(Mechanism::ScramSha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(&scram.client_first()[..], b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, expected) = scram.client_final(server_first).unwrap();
        assert_eq!(
            &client_final[..],
            &b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="[..]
        );
        Scram::verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &expected).unwrap();
        let forged = Scram::verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &expected);
        assert!(forged.unwrap_err().contains("does not know the password"));
    }

    #[test]
    fn a_server_that_changes_the_nonce_or_asks_for_endless_rounds_is_refused() {
        let scram = Scram::with_nonce(Mechanism::ScramSha512, "a,b=c", "pw", "abc").unwrap();
        assert_eq!(&scram.client_first()[..], b"n,,n=a=2Cb=3Dc,r=abc");
        assert!(scram.client_final(b"r=xyz,s=AAAA,i=4096").unwrap_err().contains("nonce"));
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=16385").unwrap_err().contains("iterations"));
        assert!(Scram::verify_server_final(b"e=invalid-proof", b"").unwrap_err().contains("invalid-proof"));
    }
}
