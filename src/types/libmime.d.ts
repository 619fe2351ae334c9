// libmime ships no type declarations; these cover the two calls the rewrite uses.
declare module 'libmime' {
  const libmime: {
    decodeWords(value: string): string;
    encodeWord(value: string, mimeWordEncoding?: 'Q' | 'B', maxLength?: number): string;
  };
  export default libmime;
}
